"""experiments/supervised_table.py: its rows and columns, default folder and missing-folder exit."""

import json
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "experiments" / "supervised_table.py"


def _table(monkeypatch, capsys, *argv):
    monkeypatch.setattr(sys, "argv", [str(TABLE), *argv])
    runpy.run_path(str(TABLE), run_name="__main__")
    return capsys.readouterr().out


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_supervised_table_rows_and_columns(tmp_path, monkeypatch, capsys):
    """supervised_table.py:16 glob of evaluation*.json, :35 columns after 0/1/5/10 steps."""
    base = {"k": 5, "steps": 10, "inner_lr": 0.01, "train_iterations": 7, "train_seconds": 12.0,
            "mse": [float(i) for i in range(11)], "ci95": [0.0] * 11}
    _write(tmp_path / "sinusoid_x" / "evaluation.json", base)
    _write(tmp_path / "sinusoid_x" / "evaluation_lrchosen.json",
           {**base, "inner_lr": 0.02, "validation": {"scores": [1.0, 2.0, 3.0]}})
    _write(tmp_path / "omniglot_y" / "evaluation.json",
           {"ways": 5, "shots": 1, "steps": 3, "inner_lr": 0.4, "accuracy": 0.9512, "ci95": 0.0031,
            "train_iterations": 9, "train_seconds": 3.0})
    out = _table(monkeypatch, capsys, str(tmp_path))
    sin_rows = [line for line in out.splitlines() if line.startswith("| sinusoid_x")]
    assert len(sin_rows) == 2
    assert "| 0.01 |" in sin_rows[0] and "(best of 3 on validation)" in sin_rows[1]  # configured before chosen
    assert "0.000 ± 0.000 | 1.000 ± 0.000 | 5.000 ± 0.000 | 10.000 ± 0.000" in sin_rows[0]
    assert "| omniglot_y | 5 | 1 | 3 | 0.4 | 95.12 ± 0.31 | 9 | 3 |" in out


def test_supervised_table_default_folder_is_shipped_results(monkeypatch, capsys):
    """supervised_table.py:27 default RESULTS = experiments/results (run from the repository root)."""
    monkeypatch.chdir(ROOT)
    out = _table(monkeypatch, capsys)
    assert "| sinusoid_maml |" in out and "| omniglot_maml |" in out


def test_supervised_table_missing_folder_exits_nonzero(tmp_path, monkeypatch, capsys):
    """supervised_table.py:29 a missing folder must exit non-zero, not print empty tables with status 0."""
    with pytest.raises(SystemExit) as info:
        _table(monkeypatch, capsys, str(tmp_path / "nope"))
    assert info.value.code not in (0, None)
