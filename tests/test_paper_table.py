"""experiments/paper_table.py: the training time and the runs table it writes."""

import importlib.util
import json
from pathlib import Path

import pytest

import metarl
from metarl.config import load_config
from metarl.training import TrainConfig

ROOT = Path(metarl.__file__).resolve().parents[1]
TINY = ["env=\"metarl/Navigation2D-v0\"", "meta_batch_size=2", "episodes_per_task=2", "hidden_sizes=[8]"]


def _tiny(*extra):
    return load_config(TrainConfig, None, TINY + list(extra))


def _load_paper_table():
    spec = importlib.util.spec_from_file_location("paper_table", ROOT / "experiments" / "paper_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

def test_training_time_sums_sampling_and_update_seconds(tmp_path):
    paper_table = _load_paper_table()
    rows = [{"iteration": 1, "sampling_s": 1.5, "update_s": 2.0}, {"iteration": 2, "sampling_s": 0.25, "update_s": 4.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert paper_table.training_seconds(tmp_path) == pytest.approx(7.75)
    assert paper_table.training_seconds(tmp_path / "none") == 0.0


def test_the_runs_table_shows_the_iterations_each_checkpoint_holds(tmp_path):
    from metarl.checkpoint import save_checkpoint
    from metarl.training import CHECKPOINT

    paper_table = _load_paper_table()
    run_dir = tmp_path / "random"
    run_dir.mkdir()
    save_checkpoint({"iteration": 0, "params": {}}, run_dir / CHECKPOINT)  # a random initialization: never trained
    entry = {"method": "random", "returns": [-40.0, -30.0], "ci95": [1.0, 1.0], "step_sizes": [0.1]}
    result = {"steps": 1, "seed": 0, "tasks": 4, "episodes_per_step": 2, "validation_tasks": 2,
              "env": "metarl/Navigation2D-v0", "methods": {"random": entry}}
    runs = {"random": {"run_dir": run_dir, "config": _tiny("method=\"random\"", "iterations=5", "seed=7"), "wall_s": 1.0}}
    table = paper_table.markdown("navigation2d", result, runs, 1.0, "cmd")
    assert f"| random | `{run_dir}` | 0 | 7 | 0 | 1 |" in table
