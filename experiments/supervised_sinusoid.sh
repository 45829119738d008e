#!/usr/bin/env bash
# Train and evaluate the four sinusoid runs one after another (at the config's test step size and at
# the best of a grid on validation tasks), then draw the figure.
# Run from the repository root: bash experiments/supervised_sinusoid.sh
# Runs go to $RESULTS/sinusoid_<name> (default experiments/results, where the shipped runs are; to
# retrain from scratch, point RESULTS at a fresh folder). A run folder that already holds a
# checkpoint continues from it (an interrupted run resumes; a finished one is only re-evaluated).
set -euo pipefail
export OMP_NUM_THREADS=1
results="${RESULTS:-experiments/results}"
for name in maml pretrain fomaml reptile; do
    run="$results/sinusoid_${name}"
    resume=()
    [[ -f "$run/checkpoint.pt" ]] && resume=(--resume)
    python -m metarl supervised train "experiments/sinusoid_${name}.toml" --out "$run" "${resume[@]}"
    python -m metarl supervised evaluate "$run"
    # and with the test step size that does best on 100 validation tasks
    python -m metarl supervised evaluate "$run" --inner-lr 0.0025 0.005 0.01 0.02 0.04
done
python -m metarl supervised figure "$results/sinusoid_maml" "$results/sinusoid_pretrain" \
    --out "$results/sinusoid_maml/figure.png"
