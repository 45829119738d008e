"""The command line: train's --seed/--resume/--evaluate, exit codes, and the defaults the help names."""

import io
import sys

import pytest

import metarl.benchmark
from metarl.cli import build_parser, main
from metarl.training import load_run

TINY_TOML = """env = "metarl/Navigation2D-v0"
meta_batch_size = 2
episodes_per_task = 2
hidden_sizes = [8]
inner_lr = 0.5
checkpoint_every = 1
num_threads = 1
cg_iters = 3
iterations = 1
eval_tasks = 2
eval_steps = 1
eval_episodes = 1
seed = 5
"""


@pytest.fixture()
def tiny_config(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


@pytest.fixture(scope="module")
def nav_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("k5")
    (d / "tiny.toml").write_text(TINY_TOML)
    out = d / "run"
    assert main(["train", str(d / "tiny.toml"), "--out", str(out), "--no-progress"]) == 0
    return out


def test_train_seed_zero_overrides_config_seed(tiny_config, tmp_path):
    """cli.py:20 `if args.seed is not None` -> `if args.seed`: --seed 0 would be silently ignored."""
    out = tmp_path / "r"
    assert main(["train", str(tiny_config), "--out", str(out), "--seed", "0", "--no-progress"]) == 0
    assert load_run(out)[0].seed == 0


def test_train_resume_without_out_is_a_user_error(tiny_config, tmp_path, monkeypatch, capsys):
    """cli.py:23 the --resume/--out check dropped: it would start/resume a fresh runs/<name>-<time> dir."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(tiny_config), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--resume" in err and "--out" in err
    assert not (tmp_path / "runs").exists()


def test_train_evaluate_flag_controls_the_table(tiny_config, tmp_path, capsys):
    """cli.py:28 `if args.evaluate` inverted: the table is printed only with --evaluate."""
    assert main(["train", str(tiny_config), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    plain = capsys.readouterr().out
    assert main(["train", str(tiny_config), "--out", str(tmp_path / "b"), "--no-progress", "--evaluate"]) == 0
    evaluated = capsys.readouterr().out
    assert plain.strip().splitlines() == [f"run directory: {tmp_path / 'a'}"]
    assert len(evaluated.strip().splitlines()) > 1


def test_bench_defaults():
    """cli.py:88/90 bench --env default halfcheetah_vel and --repeats default 3 (documented in --help)."""
    args = build_parser().parse_args(["bench"])
    assert args.env == "halfcheetah_vel" and args.repeats == 3


def test_keyboard_interrupt_exits_130(monkeypatch, capsys):
    """cli.py:133 Ctrl-C must exit with 130 (shell convention), not another code or a traceback."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(metarl.benchmark, "run_benchmark", interrupted)
    assert main(["bench", "--env", "navigation2d", "--repeats", "1"]) == 130


def test_supervised_evaluate_val_tasks_default_100():
    """supervised/cli.py:52 --val-tasks default 100 (its help says so)."""
    args = build_parser().parse_args(["supervised", "evaluate", "run", "--inner-lr", "0.1", "0.2"])
    assert args.val_tasks == 100


def test_adapt_and_compare_defaults():
    """adapt.py:336/339 --steps 3, --seed 0; compare.py:218 --val-tasks 10 (all named in --help)."""
    a = build_parser().parse_args(["adapt", "run", "--task", "goal=0,0"])
    assert a.steps == 3 and a.seed == 0
    c = build_parser().parse_args(["compare", "run"])
    assert c.val_tasks == 10 and c.seed == [0]


def test_adapt_task_and_interactive_together_is_an_error(nav_run, monkeypatch, capsys):
    """adapt.py:312 `(task is None) == (not interactive)`: both given must be refused, not run one silently."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["adapt", str(nav_run), "--task", "goal=0,0", "--interactive", "--steps", "1", "--episodes", "1"]) == 2
    assert "give either --task" in capsys.readouterr().err


@pytest.mark.parametrize("option, value", [("--episodes", "0"), ("--lr", "0")])
def test_adapt_rejects_zero_episodes_and_zero_lr(nav_run, capsys, option, value):
    """adapt.py:98 `episodes < 1` and adapt.py:122 `lr > 0`: 0 episodes / a step size of 0 are user errors."""
    args = ["adapt", str(nav_run), "--task", "goal=0,0", "--steps", "1", "--episodes", "1", option, value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and option in err
