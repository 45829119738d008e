"""``metarl supervised`` on sinusoid runs: training learns, checkpoints round-trip, errors are one line."""

import json
import math
from pathlib import Path

import pytest
import torch

from metarl.cli import main
from metarl.config import load_config
from metarl.errors import UserError
from metarl.provenance import MACHINE
from metarl.supervised.config import SupervisedConfig
from metarl.supervised.evaluate import evaluate, load_run
from metarl.supervised.problems import make_problem
from metarl.supervised.train import train

TINY = ["iterations=100", "meta_batch_size=8", "hidden_sizes=[16,16]", "eval_tasks=40", "eval_query=20",
        "log_every=50", "checkpoint_every=30"]


@pytest.fixture(scope="module")
def maml_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "maml"
    config = load_config(SupervisedConfig, None, TINY)
    params = train(config, out, progress=False)
    return out, config, params


def test_maml_training_learns_to_adapt(maml_run):
    out, config, params = maml_run
    result = evaluate(config, params)
    untrained = evaluate(config, train(load_config(SupervisedConfig, None, TINY + ["iterations=1"]), out.parent / "u", False))
    mse = result["mse"]
    assert len(mse) == 11 and len(result["ci95"]) == 11
    assert mse[2] < mse[1] < mse[0]  # fine-tuning on the K support points helps held-out points
    assert all(a < b for a, b in zip(mse, untrained["mse"]))  # and meta-training helped at every step
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [50, 100]


def test_checkpoint_round_trip_gives_the_same_evaluation(maml_run, capsys):
    out, config, params = maml_run
    loaded_config, state = load_run(out)
    assert loaded_config == config and state["iteration"] == 100
    for k in params:
        torch.testing.assert_close(state["params"][k], params[k], rtol=0, atol=0)
    assert main(["supervised", "evaluate", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = evaluate(config, params)
    assert printed["mse"] == expected["mse"] and printed["k"] == 10 and printed["task"] == "sinusoid"
    assert main(["supervised", "evaluate", str(out)]) == 0
    assert "steps 10: MSE" in capsys.readouterr().out


@pytest.mark.parametrize("extra", [["algorithm=pretrain"], ["algorithm=reptile", "inner_steps=3"], ["first_order=true"]])
def test_cli_train_other_algorithms(tmp_path, extra, capsys):
    config = tmp_path / "s.toml"
    config.write_text('task = "sinusoid"\niterations = 5\n')
    args = ["supervised", "train", str(config), "--out", str(tmp_path / "r"), "--seed", "3"]
    for item in TINY[1:] + extra:
        args += ["--set", item]
    assert main(args) == 0
    saved = load_config(SupervisedConfig, tmp_path / "r" / "config.toml")
    assert saved.seed == 3 and saved.iterations == 5
    assert main(["supervised", "evaluate", str(tmp_path / "r"), "--json", "--tasks", "7"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["tasks"] == 7


def test_figure_is_written(maml_run, tmp_path, capsys):
    out, _, _ = maml_run
    png = tmp_path / "fig" / "sinusoid.png"
    assert main(["supervised", "figure", str(out), str(out), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a name it cannot write is refused before the runs are loaded, in one line
    (tmp_path / "folder.png").mkdir()
    for bad, message in [(tmp_path / "fig.txt", "the file name must end in .png, .pdf, .svg"),
                         (tmp_path / "folder.png", "a folder of that name exists; give a file name")]:
        assert main(["supervised", "figure", str(out), str(out), "--out", str(bad)]) == 2
        assert capsys.readouterr().err.strip().endswith(f"--out {bad}: {message}")


@pytest.mark.parametrize(
    "toml, message",
    [
        ("tsak = 1\n", "error: unknown config key 'tsak' in "),
        ("iterations = 'many'\n", "error: config key 'iterations' expects an integer, got 'many'"),
        ("algorithm = 'sgd'\n", "error: config key 'algorithm' must be one of maml, reptile, pretrain, got 'sgd'"),
        ("ways = 1\n", "error: config key 'ways' must be at least 2, got 1"),
        ("task = 'omniglot'\n", "error: config key 'train_data' must list at least one folder or zip"),
        ("inner_lr = -0.1\n", "error: config key 'inner_lr' must be a positive number, got -0.1"),
        ("meta_lr = inf\n", "error: config key 'meta_lr' must be a positive number, got inf"),
        ("augment_rotation = inf\n", "error: config key 'augment_rotation' must be a finite number >= 0, got inf"),
        ("eval_seed = -3\n", "error: config key 'eval_seed' must be in [0, 2**64 - 1], got -3"),
        ("task = 'folders'\ntrain_data = ['a']\ntest_data = ['b']\nvmap_tasks = true\n",
         "error: config key 'vmap_tasks' must be false for second-order MAML on images: torch.func.vmap gives wrong"),
        ("algorithm = 'reptile'\nfirst_order = true\n",
         "error: config key 'first_order' applies to algorithm 'maml' only; this config has task 'sinusoid' and "
         "algorithm 'reptile'"),
        ("algorithm = 'pretrain'\ninner_steps = 5\n", "error: config key 'inner_steps' applies to algorithms 'maml' and"),
        ("filters = 32\n", "error: config key 'filters' applies to image tasks only"),
        ("rotations = false\n", "error: config key 'rotations' applies to image tasks only"),
        ("task = 'omniglot'\ntrain_data = ['a']\ntest_data = ['b']\ngrayscale = true\n",
         "error: config key 'grayscale' applies to task 'folders' only (Omniglot is always read grey); this config"),
        ("task = 'folders'\ntrain_data = ['a']\ntest_data = ['b']\nhidden_sizes = [10]\n",
         "error: config key 'hidden_sizes' applies to task 'sinusoid' only"),
        ("meta_lr_milestones = [10, 10]\n",  # a milestone twice would decay twice at one iteration
         "error: config key 'meta_lr_milestones' must list increasing positive iterations, got [10, 10]"),
        ("inner_steps = -1\n", "error: config key 'inner_steps' must be at least 0, got -1"),
        ("eval_steps = -1\n", "error: config key 'eval_steps' must be at least 0, got -1"),
        ("eval_inner_lr = 0.0\n", "error: config key 'eval_inner_lr' must be a positive number, got 0.0"),
        ("seed = 18446744073709551616\n", "error: config key 'seed' must be in [0, 2**64 - 1], got 18446744073709551616"),
    ],
)
def test_bad_configs_are_one_line_errors(tmp_path, capsys, toml, message):
    config = tmp_path / "bad.toml"
    # a tiny run where the case leaves the keys free: a missing check fails in seconds, not after 70,000 iterations
    tiny = {"iterations": 1, "meta_batch_size": 2, "eval_tasks": 2}
    config.write_text(toml + "".join(f"{k} = {v}\n" for k, v in tiny.items() if k not in toml))
    assert main(["supervised", "train", str(config), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_a_config_of_the_other_kind_is_named_as_such(tmp_path, capsys):
    # a supervised config given to a meta-RL command, and the reverse: not a list of "unknown" keys
    supervised, rl = tmp_path / "s.toml", tmp_path / "r.toml"
    supervised.write_text('task = "sinusoid"\nalgorithm = "maml"\nseed = 1\n')
    rl.write_text('env = "metarl/Navigation2D-v0"\nmeta_batch_size = 2\nseed = 1\n')
    assert main(["train", str(supervised), "--out", str(tmp_path / "a")]) == 2
    assert capsys.readouterr().err == f"error: {supervised}: a supervised (`metarl supervised train`, `evaluate`) config, not one for this command\n"
    assert main(["supervised", "train", str(rl), "--out", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {rl}: a meta-RL (`metarl train`, ")
    rl.write_text('env = "metarl/Navigation2D-v0"\nalgorithm = "maml"\n')  # a typo'd key of its own kind stays unknown
    assert main(["train", str(rl), "--out", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err.startswith(f"error: unknown config key 'algorithm' in {rl} (known: ")
    assert not any(tmp_path.glob("[abc]"))


def test_bad_run_folders_are_one_line_errors(tmp_path, capsys):
    assert main(["supervised", "evaluate", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"error: run folder not found: {tmp_path / 'nope'}\n"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"garbage")
    assert main(["supervised", "evaluate", str(tmp_path / "run")]) == 2
    assert "is corrupt or not a metarl checkpoint" in capsys.readouterr().err
    assert main(["supervised", "train", str(tmp_path / "none.toml")]) == 2
    assert capsys.readouterr().err == f"error: config file not found: {tmp_path / 'none.toml'}\n"


def test_resumed_run_ends_with_the_same_parameters(tmp_path, capsys):
    straight = train(load_config(SupervisedConfig, None, TINY[1:] + ["iterations=8"]), tmp_path / "a", progress=False)
    train(load_config(SupervisedConfig, None, TINY[1:] + ["iterations=5"]), tmp_path / "b", progress=False)
    config = tmp_path / "s.toml"
    config.write_text('task = "sinusoid"\n')
    args = ["supervised", "train", str(config), "--out", str(tmp_path / "b")]
    for item in TINY[1:] + ["iterations=8"]:
        args += ["--set", item]
    assert main(args) == 2  # the folder holds a run: say so rather than overwrite it
    assert "--resume" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0
    _, state = load_run(tmp_path / "b")
    assert state["iteration"] == 8
    for k in straight:  # Adam's moments and the task sampler continue where they stopped
        assert torch.equal(state["params"][k], straight[k]), k
    assert main(args + ["--resume", "--set", "meta_batch_size=4"]) == 2
    assert "meta_batch_size" in capsys.readouterr().err
    # a refused resume leaves the machine record alone; each accepted start or resume has its line
    machine = [json.loads(line) for line in (tmp_path / "b" / MACHINE).read_text().splitlines()]
    assert [m["from_iteration"] for m in machine] == [0, 5]


def test_sigterm_saves_the_last_completed_iteration_and_frees_the_run(tmp_path, monkeypatch):
    # a training stopped with kill (SIGTERM) must save like Ctrl-C and leave no lock file behind
    import os
    import signal

    import metarl.supervised.train as train_module
    from metarl.checkpoint import LOCK

    real, calls = train_module.maml_meta_gradient, {"n": 0}

    def killed(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "maml_meta_gradient", killed)
    config = load_config(SupervisedConfig, None, TINY[1:] + ["iterations=6", "checkpoint_every=100"])
    # a known handler before, whatever an earlier training in this process may have left
    original = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with pytest.raises(KeyboardInterrupt):
            train(config, tmp_path / "run", progress=False)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back as it was
    finally:
        signal.signal(signal.SIGTERM, original)
    _, state = load_run(tmp_path / "run")
    assert state["iteration"] == 2  # the handler runs before iteration 3's update: iteration 2 is the last completed
    assert not (tmp_path / "run" / LOCK).exists()


def test_interrupt_saves_the_last_completed_iteration_and_resume_matches(tmp_path, monkeypatch):
    import metarl.supervised.train as train_module

    straight = train(load_config(SupervisedConfig, None, TINY[1:] + ["iterations=6"]), tmp_path / "a", progress=False)
    real, calls = train_module.maml_meta_gradient, {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "maml_meta_gradient", interrupted)
    config = load_config(SupervisedConfig, None, TINY[1:] + ["iterations=6", "checkpoint_every=100"])
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "b", progress=False)
    _, state = load_run(tmp_path / "b")
    assert state["iteration"] == 3
    monkeypatch.setattr(train_module, "maml_meta_gradient", real)
    resumed = train(config, tmp_path / "b", progress=False, resume=True)
    for k in straight:
        assert torch.equal(resumed[k], straight[k]), k


def _logged_iterations(run):
    return [json.loads(line)["iteration"] for line in (run / "log.jsonl").read_text().splitlines()]


def test_a_crash_keeps_the_last_checkpoint_and_resume_logs_each_iteration_once(tmp_path, monkeypatch):
    import metarl.supervised.train as train_module

    real, calls = train_module.maml_meta_gradient, {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("power cut")  # not an interrupt: nothing is saved at the crash
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "maml_meta_gradient", crashing)
    config = load_config(SupervisedConfig, None, TINY[1:] + ["iterations=5", "log_every=1", "checkpoint_every=2"])
    with pytest.raises(RuntimeError):
        train(config, tmp_path / "r", progress=False)
    assert load_run(tmp_path / "r")[1]["iteration"] == 2  # the periodic checkpoint
    assert _logged_iterations(tmp_path / "r") == [1, 2, 3]  # iteration 3 was logged after it
    monkeypatch.setattr(train_module, "maml_meta_gradient", real)
    train(config, tmp_path / "r", progress=False, resume=True)
    assert _logged_iterations(tmp_path / "r") == [1, 2, 3, 4, 5]  # the row past the checkpoint dropped, then redone


def test_the_last_log_window_is_written_even_when_short(tmp_path):
    train(load_config(SupervisedConfig, None, TINY[1:] + ["iterations=5", "log_every=2"]), tmp_path / "r", progress=False)
    assert _logged_iterations(tmp_path / "r") == [2, 4, 5]


def test_an_interrupt_after_an_update_saves_that_iteration(tmp_path, monkeypatch):
    # Ctrl-C while the progress bar updates: the iteration's step is applied, so it is the one saved
    import metarl.supervised.train as train_module

    class InterruptedBar(train_module.tqdm):
        updates = 0

        def update(self, n=1):
            InterruptedBar.updates += 1
            if InterruptedBar.updates == 3:
                raise KeyboardInterrupt
            return super().update(n)

    monkeypatch.setattr(train_module, "tqdm", InterruptedBar)
    config = load_config(SupervisedConfig, None, TINY[1:] + ["iterations=6", "checkpoint_every=100"])
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "r", progress=False)
    assert load_run(tmp_path / "r")[1]["iteration"] == 3


def test_a_checkpoint_without_sampler_state_resumes_from_the_derived_draws(tmp_path, monkeypatch, capsys):
    # checkpoints written before the sampler state was saved: the next iteration's tasks come from
    # (seed, iteration), not from the start of the stream again
    import metarl.supervised.train as train_module
    from metarl.checkpoint import load_checkpoint, save_checkpoint
    from metarl.seeding import TRAIN, derive_seed

    config = load_config(SupervisedConfig, None, TINY[1:] + ["iterations=2"])
    train(config, tmp_path / "r", progress=False)
    state = load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    for key in ("generator", "torch_rng", "optimizer"):
        del state[key]
    save_checkpoint(state, tmp_path / "r" / "checkpoint.pt")
    seen, real = [], train_module.maml_meta_gradient
    monkeypatch.setattr(train_module, "maml_meta_gradient",
                        lambda loss_fn, params, tasks, *rest: seen.append(tasks) or real(loss_fn, params, tasks, *rest))
    train(load_config(SupervisedConfig, None, TINY[1:] + ["iterations=3"]), tmp_path / "r", progress=False, resume=True)
    assert "predates saved optimizer and sampler state" in capsys.readouterr().err
    expected = make_problem(config).sample_train(config.meta_batch_size,
                                                 torch.Generator().manual_seed(derive_seed(TRAIN, config.seed, 2)))
    assert torch.equal(seen[0].support_x, expected.support_x)


def test_resuming_a_finished_run_changes_none_of_its_files(tmp_path, capsys):
    config = load_config(SupervisedConfig, None, TINY[1:] + ["iterations=2"])
    trained = train(config, tmp_path / "r", progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()}
    again = train(config, tmp_path / "r", progress=False, resume=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()} == before
    assert all(torch.equal(again[k], trained[k]) for k in trained)
    assert "already trained to iteration 2; nothing to do" in capsys.readouterr().err


def test_a_reptile_run_refuses_a_new_iteration_count_on_resume(tmp_path):
    # its outer step decays linearly over `iterations`: a new count would re-scale the steps already taken
    reptile = TINY[1:] + ["algorithm=\"reptile\"", "inner_steps=2"]
    train(load_config(SupervisedConfig, None, reptile + ["iterations=2"]), tmp_path / "r", progress=False)
    with pytest.raises(UserError, match=r"Reptile's outer step size decays linearly to 0 over 'iterations' \(2 in"):
        train(load_config(SupervisedConfig, None, reptile + ["iterations=4"]), tmp_path / "r", progress=False, resume=True)
    # the same count resumes
    train(load_config(SupervisedConfig, None, reptile + ["iterations=2"]), tmp_path / "r", progress=False, resume=True)
    # the decay starts at the full step: a one-iteration run still moves the initialization
    one = load_config(SupervisedConfig, None, reptile + ["iterations=1", "meta_lr=0.5"])
    init = make_problem(one).init_params(torch.Generator().manual_seed(one.seed))
    moved = train(one, tmp_path / "one", progress=False)
    assert not torch.equal(moved["fc0.weight"], init["fc0.weight"])


def test_meta_lr_decay_added_on_resume_matches_a_run_with_that_schedule(tmp_path):
    # a step decay added after the saved iteration changes nothing already trained, so resuming with it
    # must end where one run with the schedule from the start ends; a decay in the past is refused
    schedule = ["meta_lr_milestones=[5]", "meta_lr_decay=0.1"]
    straight = train(load_config(SupervisedConfig, None, TINY[1:] + ["iterations=8"] + schedule), tmp_path / "a",
                     progress=False)
    plain = train(load_config(SupervisedConfig, None, TINY[1:] + ["iterations=8"]), tmp_path / "c", progress=False)
    assert not all(torch.equal(straight[k], plain[k]) for k in straight)  # the decay does act
    train(load_config(SupervisedConfig, None, TINY[1:] + ["iterations=5"]), tmp_path / "b", progress=False)
    resumed = train(load_config(SupervisedConfig, None, TINY[1:] + ["iterations=8"] + schedule), tmp_path / "b",
                    progress=False, resume=True)
    for k in straight:
        assert torch.equal(resumed[k], straight[k]), k
    late = load_config(SupervisedConfig, None, TINY[1:] + ["iterations=10", "meta_lr_milestones=[3]"])
    with pytest.raises(UserError, match="meta_lr schedule .* iteration 4"):
        train(late, tmp_path / "b", progress=False, resume=True)
    # a milestone one before the saved iteration (8) changes only that iteration's step: refused too
    late = load_config(SupervisedConfig, None, TINY[1:] + ["iterations=10", "meta_lr_milestones=[5, 7]"])
    with pytest.raises(UserError, match="meta_lr schedule .* at iteration 8, which is already trained"):
        train(late, tmp_path / "b", progress=False, resume=True)


def test_meta_lr_schedule_factor_and_bad_milestones():
    config = load_config(SupervisedConfig, None, ["meta_lr_milestones=[10, 20]", "meta_lr_decay=0.5"])
    assert [config.meta_lr_factor(i) for i in (1, 10, 11, 20, 21)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    for bad in ("meta_lr_milestones=[20, 10]", "meta_lr_milestones=[0]", "meta_lr_decay=0"):
        with pytest.raises(UserError, match="meta_lr_"):
            load_config(SupervisedConfig, None, [bad])


SHIPPED = sorted(p for p in (Path(__file__).resolve().parents[1] / "experiments" / "results").iterdir()
                 if p.name.startswith(("sinusoid_", "omniglot_")))


@pytest.mark.parametrize("run", SHIPPED, ids=lambda p: p.name)
def test_shipped_supervised_runs_match_their_evaluations(run):
    """Each shipped run loads, and every evaluation JSON beside it was made from this checkpoint and config."""
    config, state = load_run(run)
    evaluations = sorted(run.glob("evaluation*.json"))
    assert evaluations and state["iteration"] == config.iterations
    for path in evaluations:
        result = json.loads(path.read_text())
        assert result["train_iterations"] == state["iteration"], path.name
        assert result["algorithm"] == config.method
        if config.task == "omniglot":
            assert result["ways"] == config.ways, path.name
        if "validation" in result:  # a step size chosen on validation tasks: the best finite score among them
            finite = [v for v in result["validation"]["scores"].values() if math.isfinite(v)]
            best = max(finite) if config.task == "omniglot" else min(finite)
            assert result["validation"]["scores"][str(result["inner_lr"])] == best, path.name
        elif "inner_lr" in result and "_lr" not in path.name:
            assert result["inner_lr"] == config.test_inner_lr, path.name
    if config.task == "omniglot" and config.algorithm != "pretrain":
        assert state["params"]["out.weight"].shape[0] == config.ways


def test_several_test_step_sizes_are_chosen_on_validation_tasks(maml_run, tmp_path, capsys):
    out, config, params = maml_run
    lrs = [1e3, 0.001, config.inner_lr, 0.05]  # the first overflows: a NaN or inf score must rank last
    chosen = evaluate(config, params, steps=3, inner_lrs=lrs, val_tasks=20)
    scores = {float(k): v for k, v in chosen["validation"]["scores"].items()}
    assert list(scores) == lrs and chosen["validation"]["tasks"] == 20
    assert not scores[1e3] < 1e6  # diverged
    assert chosen["inner_lr"] == min(lrs[1:], key=scores.get)
    single = evaluate(config, params, steps=3, inner_lrs=[chosen["inner_lr"]])
    assert "validation" not in single and single["mse"] == chosen["mse"]  # the test tasks scored with the choice
    # validation tasks are not the held-out ones (compared on as many tasks, so a shared draw would show)
    assert scores[chosen["inner_lr"]] != evaluate(config, params, tasks=20, steps=3, inner_lrs=[chosen["inner_lr"]])["mse"][-1]
    assert evaluate(config, params, steps=3)["inner_lr"] == config.inner_lr
    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoint.pt", "config.toml"):
        (run / name).write_bytes((out / name).read_bytes())
    assert main(["supervised", "evaluate", str(run), "--steps", "3", "--inner-lr", "0.001", "0.01", "--val-tasks", "20"]) == 0
    assert "test step size 0.01, chosen on 20 validation tasks (0.001: " in capsys.readouterr().out
    assert json.loads((run / "evaluation_3steps_lrchosen.json").read_text())["inner_lr"] == 0.01
    assert main(["supervised", "evaluate", str(run), "--inner-lr", "0.02"]) == 0
    assert json.loads((run / "evaluation_lr0.02.json").read_text())["inner_lr"] == 0.02
    # --json: stdout is the one object (the choice's line goes to stderr); a quick check on fewer tasks than
    # the config's gets its own file instead of overwriting the full evaluation
    capsys.readouterr()
    assert main(["supervised", "evaluate", str(run), "--inner-lr", "0.001", "0.01", "--val-tasks", "5", "--tasks", "7",
                 "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["tasks"] == 7 and "chosen on 5 validation tasks" in captured.err
    assert json.loads((run / "evaluation_7tasks_lrchosen.json").read_text())["tasks"] == 7
    assert main(["supervised", "evaluate", str(run), "--inner-lr", "0.02", "-1"]) == 2
    assert capsys.readouterr().err == "error: test step sizes must be positive numbers, got [0.02, -1.0]\n"
    assert main(["supervised", "evaluate", str(run), "--inner-lr", "0.02", "nan"]) == 2
    assert capsys.readouterr().err == "error: test step sizes must be positive numbers, got [0.02, nan]\n"
    assert main(["supervised", "evaluate", str(run), "--inner-lr", "0"]) == 2  # a step of 0 is no adaptation
    assert capsys.readouterr().err == "error: test step sizes must be positive numbers, got [0.0]\n"
    for option, value, least in (("--tasks", "0", 1), ("--shots", "0", 1), ("--steps", "-1", 0), ("--val-tasks", "0", 1)):
        assert main(["supervised", "evaluate", str(run), option, value]) == 2  # the option it names, not a list of all
        assert capsys.readouterr().err == f"error: {option} must be >= {least}, got {value}\n"


def test_held_out_scores_cover_exactly_the_tasks_asked_for(maml_run):
    # tasks are scored in chunks of CHUNK; a count that is not a multiple must not be rounded up to one
    from metarl.supervised.evaluate import CHUNK, _scores
    from metarl.supervised.problems import make_problem

    _, config, params = maml_run
    problem = make_problem(config)
    for n in (7, CHUNK + 3):
        scores = _scores(problem, params, problem.sample_test, n, 0, config.shots, config.inner_lr, 2, True, "test")
        assert scores.shape == (n, 3)
