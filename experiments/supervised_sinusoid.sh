#!/usr/bin/env bash
# Train and evaluate the four sinusoid runs one after another, then draw the figure.
# Run from the repository root: bash experiments/supervised_sinusoid.sh
set -euo pipefail
export OMP_NUM_THREADS=1
for name in maml pretrain fomaml reptile; do
    python -m metarl supervised train "experiments/sinusoid_${name}.toml" --out "experiments/results/sinusoid_${name}"
    python -m metarl supervised evaluate "experiments/results/sinusoid_${name}"
done
python -m metarl supervised figure experiments/results/sinusoid_maml experiments/results/sinusoid_pretrain \
    --out experiments/results/sinusoid_maml/figure.png
