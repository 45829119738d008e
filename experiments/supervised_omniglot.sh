#!/usr/bin/env bash
# Train the Omniglot runs given as arguments (names of experiments/omniglot_<name>.toml) one after
# another, each evaluated at its config's ways, 1-shot and 5-shot, after 3 and after 10 test steps, on
# 600 test tasks, at the config's test step size and at the best of a grid on validation tasks (the
# files the README's tables and the shipped runs hold). Run from the
# repository root:
#   bash experiments/supervised_omniglot.sh maml pretrain fomaml reptile    # 5-way
#   bash experiments/supervised_omniglot.sh maml_20way pretrain_20way       # 20-way
# Runs go to $RESULTS/omniglot_<name> (default experiments/results, where the shipped runs are; to
# retrain from scratch, point RESULTS at a fresh folder). A run folder that already holds a
# checkpoint continues from it (an interrupted run resumes; a finished one is only re-evaluated).
set -euo pipefail
export OMP_NUM_THREADS=1
results="${RESULTS:-experiments/results}"
grid=(0.025 0.05 0.1 0.2 0.4 0.8)
for name in "$@"; do
    run="$results/omniglot_${name}"
    resume=()
    [[ -f "$run/checkpoint.pt" ]] && resume=(--resume)
    python -m metarl supervised train "experiments/omniglot_${name}.toml" --out "$run" "${resume[@]}"
    for steps in 3 10; do
        for shots in 1 5; do
            # at the config's test step size, then at the one that does best on 100 validation tasks
            # of the training characters
            python -m metarl supervised evaluate "$run" --shots "$shots" --steps "$steps"
            python -m metarl supervised evaluate "$run" --shots "$shots" --steps "$steps" --inner-lr "${grid[@]}"
        done
    done
done
