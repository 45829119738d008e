#!/usr/bin/env bash
# Train the Omniglot runs given as arguments (names of experiments/omniglot_<name>.toml) one after
# another, each evaluated at its config's ways, 1-shot and 5-shot, on 600 test tasks. Run from the
# repository root:
#   bash experiments/supervised_omniglot.sh maml pretrain fomaml reptile    # 5-way
#   bash experiments/supervised_omniglot.sh maml_20way pretrain_20way       # 20-way
# Runs go to $RESULTS/omniglot_<name> (default experiments/results, where the shipped runs are; to
# retrain from scratch, point RESULTS at a fresh folder). A run folder that already holds a
# checkpoint continues from it (an interrupted run resumes; a finished one is only re-evaluated).
set -euo pipefail
export OMP_NUM_THREADS=1
results="${RESULTS:-experiments/results}"
for name in "$@"; do
    run="$results/omniglot_${name}"
    resume=()
    [[ -f "$run/checkpoint.pt" ]] && resume=(--resume)
    python -m metarl supervised train "experiments/omniglot_${name}.toml" --out "$run" "${resume[@]}"
    python -m metarl supervised evaluate "$run"
    python -m metarl supervised evaluate "$run" --shots 5
done
