#!/usr/bin/env bash
# Train the Omniglot runs given as arguments (names of experiments/omniglot_<name>.toml) one after
# another, each evaluated 5-way 1-shot and 5-shot on 600 test tasks. Run from the repository root:
#   bash experiments/supervised_omniglot.sh maml pretrain fomaml reptile
set -euo pipefail
export OMP_NUM_THREADS=1
for name in "$@"; do
    run="experiments/results/omniglot_${name}"
    python -m metarl supervised train "experiments/omniglot_${name}.toml" --out "$run"
    python -m metarl supervised evaluate "$run"
    python -m metarl supervised evaluate "$run" --shots 5
done
