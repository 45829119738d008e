"""Print the Markdown tables of the supervised results from RESULTS/*/evaluation*.json.

Run from the repository root: python experiments/supervised_table.py [RESULTS]
(RESULTS defaults to experiments/results, the shipped runs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _rows(results: Path, prefix: str) -> list[tuple[str, dict]]:
    rows = []
    for path in sorted(results.glob(f"{prefix}_*/evaluation*.json")):
        r = json.loads(path.read_text())
        chosen = f" (best of {len(r['validation']['scores'])} on validation)" if "validation" in r else ""
        r["step_size"] = f"{r['inner_lr']:g}{chosen}"
        rows.append((path.parent.name, r))
    # per run: by shots and test steps, the configured step size before the chosen one
    return sorted(rows, key=lambda row: (row[0], row[1].get("shots", row[1].get("k")), row[1]["steps"],
                                         "validation" in row[1]))


def main() -> None:
    results = Path(sys.argv[1] if len(sys.argv) > 1 else "experiments/results")
    if not results.is_dir():
        sys.exit(f"supervised_table: no such folder: {results}")
    print("| run | K | step size | MSE after 0 steps | after 1 step | after 5 steps | after 10 steps | iterations "
          "| train time (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in _rows(results, "sinusoid"):
        m, c = r["mse"], r["ci95"]
        cells = [f"{m[i]:.3f} ± {c[i]:.3f}" for i in (0, 1, 5, 10)]
        print(f"| {name} | {r['k']} | {r['step_size']} | {' | '.join(cells)} | {r['train_iterations']} | {r['train_seconds']:.0f} |")
    print()
    print("| run | ways | shots | test steps | step size | accuracy (%) | iterations | train time (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in _rows(results, "omniglot"):
        acc = f"{100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f}"
        print(f"| {name} | {r['ways']} | {r['shots']} | {r['steps']} | {r['step_size']} | {acc} | {r['train_iterations']} "
              f"| {r['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
