"""Print the Markdown tables of the supervised results from experiments/results/*/evaluation*.json.

Run from the repository root: python experiments/supervised_table.py
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path("experiments/results")


def _rows(prefix: str) -> list[tuple[str, dict]]:
    rows = []
    for path in sorted(RESULTS.glob(f"{prefix}_*/evaluation*.json")):
        rows.append((path.parent.name, json.loads(path.read_text())))
    return rows


def main() -> None:
    print("| run | K | MSE after 0 steps | after 1 step | after 5 steps | after 10 steps | iterations | train time (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in _rows("sinusoid"):
        m, c = r["mse"], r["ci95"]
        cells = [f"{m[i]:.3f} ± {c[i]:.3f}" for i in (0, 1, 5, 10)]
        print(f"| {name} | {r['k']} | {' | '.join(cells)} | {r['train_iterations']} | {r['train_seconds']:.0f} |")
    print()
    print("| run | ways | shots | test steps | accuracy (%) | iterations | train time (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in _rows("omniglot"):
        acc = f"{100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f}"
        print(f"| {name} | {r['ways']} | {r['shots']} | {r['steps']} | {acc} | {r['train_iterations']} "
              f"| {r['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
