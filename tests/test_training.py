"""Training loop: exact resume, Ctrl-C saves, config and checkpoint errors, evaluation output."""

import json
import math
import stat
import struct
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import metarl.maml_trpo
from metarl.checkpoint import load_checkpoint, save_checkpoint
from metarl.cli import main
from metarl.config import load_config
from metarl.errors import UserError
from metarl.evaluation import evaluate_run
from metarl.policies import CategoricalMLPPolicy, GaussianMLPPolicy
from metarl.provenance import MACHINE
from metarl.training import (CHECKPOINT, METRICS, TrainConfig, load_run, make_env, make_learner, make_policy, run_dir_of,
                             train)

TINY = ["env=\"metarl/Navigation2D-v0\"", "meta_batch_size=2", "episodes_per_task=2", "hidden_sizes=[8]",
        "inner_lr=0.5", "checkpoint_every=1", "num_threads=1", "cg_iters=3"]


def tiny(iterations, *extra):
    return load_config(TrainConfig, None, TINY + [f"iterations={iterations}", *extra])


def parts(config):
    """The batched env (one rollout's worth of envs), policy and learner of a config."""
    env = make_env(config, config.meta_batch_size, config.episodes_per_task)
    policy = make_policy(config, env)
    return env, policy, make_learner(config, policy)


def params_of(run_dir):
    return load_checkpoint(run_dir / CHECKPOINT)["params"]


def test_resumed_run_ends_with_the_same_parameters(tmp_path):
    straight = train(tiny(4), tmp_path / "straight", progress=False)
    first = train(tiny(2), tmp_path / "resumed", progress=False)
    assert load_checkpoint(first / CHECKPOINT)["iteration"] == 2
    with open(first / METRICS, "ab") as log:  # a row torn by a crash mid-write: dropped, not a failed resume
        log.write(b'{"iteration": 3, "return_pre": -4\x00\x00')
    train(tiny(4), tmp_path / "resumed", resume=True, progress=False)
    a, b = params_of(straight), params_of(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the runs really moved: otherwise equality would prove nothing
    initial = GaussianMLPPolicy(2, 2, hidden_sizes=(8,)).init_params(torch.Generator().manual_seed(0))
    assert any(not torch.equal(a[k], initial[k]) for k in a)
    rows = [json.loads(line) for line in (tmp_path / "resumed" / METRICS).read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    # TensorBoard holds the same rows: the checkpointed iteration's survives the resume, the redone ones once
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "resumed" / "tb")).Reload().Scalars("return_pre")
    assert [e.step for e in events] == [1, 2, 3, 4]
    assert [e.value for e in events] == pytest.approx([r["return_pre"] for r in rows])
    # the machine record says where each stretch of the run was trained
    machine = [json.loads(line) for line in (tmp_path / "resumed" / MACHINE).read_text().splitlines()]
    assert [m["from_iteration"] for m in machine] == [0, 2]
    assert all(m["cpu_capability"] == torch.backends.cpu.get_cpu_capability() for m in machine)
    assert all(m["torch"].split("+")[0] == torch.__version__.split("+")[0] and m["cpu"] for m in machine)


def test_interrupt_saves_the_last_completed_iteration_and_resume_matches(tmp_path, monkeypatch):
    straight = train(tiny(3, "checkpoint_every=10"), tmp_path / "straight", progress=False)
    real_step = metarl.maml_trpo.MAMLTRPO.step
    calls = {"n": 0}

    def interrupted_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(metarl.maml_trpo.MAMLTRPO, "step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(3, "checkpoint_every=10"), tmp_path / "run", progress=False)
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT)["iteration"] == 2
    monkeypatch.setattr(metarl.maml_trpo.MAMLTRPO, "step", real_step)
    train(tiny(3, "checkpoint_every=10"), tmp_path / "run", resume=True, progress=False)
    a, b = params_of(straight), params_of(tmp_path / "run")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_existing_run_is_not_overwritten_and_resume_rejects_changed_config(tmp_path):
    run = train(tiny(1), tmp_path / "run", progress=False)
    before = (run / CHECKPOINT).read_bytes()
    with pytest.raises(UserError, match="already holds a checkpoint"):
        train(tiny(2), run, progress=False)
    with pytest.raises(UserError, match="'inner_lr' differs"):
        train(tiny(2, "inner_lr=0.1"), run, resume=True, progress=False)
    assert (run / CHECKPOINT).read_bytes() == before
    # a thread count sets speed, not the experiment: it may change, and the run records the new one
    train(tiny(2, "num_threads=2"), run, resume=True, progress=False)
    assert load_checkpoint(run / CHECKPOINT)["iteration"] == 2
    assert "num_threads = 2" in (run / "config.toml").read_text()


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path, capsys):
    run = train(tiny(1), tmp_path / "run", progress=False)
    (run / CHECKPOINT).write_bytes(b"not a checkpoint")
    assert main(["evaluate", str(run), "--tasks", "2", "--steps", "1", "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: checkpoint") and "corrupt" in err and "\n" not in err


def test_checkpoints_of_other_objects_are_refused_unread(tmp_path):
    # torch.load(weights_only=True): a pickled object other than tensors and plain values is never built
    from pathlib import PurePosixPath

    torch.save({"params": PurePosixPath("not/a/tensor")}, tmp_path / "object.pt")
    with pytest.raises(UserError, match="holds objects other than tensors and plain values"):
        load_checkpoint(tmp_path / "object.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(UserError, match="is not a metarl checkpoint \\(no state dict\\)"):
        load_checkpoint(tmp_path / "list.pt")


def test_resume_drops_log_rows_past_the_checkpoint_and_damaged_ones(tmp_path):
    from metarl.checkpoint import drop_log_rows_after

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"iteration": 1}\nnull\n{"iteration": null}\n{"iteration": 2}\n{"iteration": 3}\n{"itera')
    drop_log_rows_after(log, 2)
    assert log.read_text() == '{"iteration": 1}\n{"iteration": 2}\n'


def test_a_checkpoint_round_trips_with_an_ordinary_files_mode_and_no_temporary_file_left(tmp_path):
    (tmp_path / ".c.pt.x1y2.tmp").write_bytes(b"half a checkpoint")  # a write a crash cut short
    save_checkpoint({"iteration": 3, "params": {"w": torch.arange(3.0)}}, tmp_path / "c.pt")
    (tmp_path / "plain").write_text("")  # what the user's umask gives any new file
    assert stat.S_IMODE((tmp_path / "c.pt").stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    state = load_checkpoint(tmp_path / "c.pt")
    assert state["iteration"] == 3 and torch.equal(state["params"]["w"], torch.arange(3.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "plain"]


@pytest.mark.parametrize("item, message", [
    ("bogus=1", "unknown config key 'bogus' in --set bogus=1"),
    ("inner_lr=-1", "'inner_lr' must be a positive number"),
    ("gamma=1.5", "'gamma' must be in (0, 1]"),
    ("baseline_obs_clip=0", "'baseline_obs_clip' must be positive"),
    ("meta_step_weights=[1, 1]", "'meta_step_weights' needs one weight per inner step (1)"),
    ("meta_step_weights=[-1]", "'meta_step_weights' must be finite and >= 0 with the last > 0"),
    ("meta_pre_weight=-0.5", "'meta_pre_weight' must be finite and >= 0"),
    ('inner_objective="dice"', "'inner_objective' must be one of vpg, lvc, got 'dice'"),
    ("meta_batch_size=2.5", "'meta_batch_size' expects an integer"),
    ("seed=-1", "config key 'seed' must be in [0, 2**64 - 1], got -1"),  # was a numpy traceback from the seed hashing
    ("seed=18446744073709551616", "config key 'seed' must be in [0, 2**64 - 1]"),  # was torch's overflow traceback
    ("cg_damping=nan", "'cg_damping' must be finite and >= 0, got nan"),  # was a run whose every update was rejected
    ("eval_tasks=1", "'eval_tasks' must be >= 2, got 1"),  # was an error only after training, from --evaluate
    ("env=\"metarl/Nope-v0\"", "unknown environment 'metarl/Nope-v0'"),
])
def test_bad_config_values_are_one_line_errors(tmp_path, capsys, item, message):
    config = tmp_path / "c.toml"
    # a tiny run: where a check were missing, the test fails in a second instead of training the defaults
    config.write_text("".join(line + "\n" for line in TINY + ["iterations=1"]))
    assert main(["train", str(config), "--out", str(tmp_path / "r"), "--set", item]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_a_config_file_that_is_not_utf8_is_a_one_line_error(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_bytes(b'env = "\xff"\n')
    assert main(["train", str(config), "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == f"error: config file {config} is not valid TOML: not UTF-8 text (byte 7)"


def test_an_out_that_is_a_file_is_a_one_line_error_and_the_file_is_kept(tmp_path, capsys):
    (tmp_path / "afile").write_text("mine")
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        assert main(["train", str(Path(__file__).resolve().parents[1] / "experiments" / "navigation2d.toml"), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: run directory {out}") and "is not a folder" in err and "\n" not in err
    assert (tmp_path / "afile").read_text() == "mine"
    long = tmp_path / ("r" * 300)  # a folder the OS refuses to make
    assert main(["train", str(Path(__file__).resolve().parents[1] / "experiments" / "navigation2d.toml"), "--out", str(long)]) == 2
    assert capsys.readouterr().err == f"error: run directory {long} cannot be written (File name too long)\n"


def test_a_checkpoint_with_flipped_bytes_is_corrupt_not_wrong_weights(tmp_path, capsys):
    run = train(tiny(1), tmp_path / "run", progress=False)
    with zipfile.ZipFile(run / CHECKPOINT) as archive:  # the largest tensor's record
        record = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray((run / CHECKPOINT).read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[record.header_offset + 26:record.header_offset + 30])
    start = record.header_offset + 30 + name_len + extra_len + record.file_size // 2  # inside its stored floats
    data[start:start + 8] = bytes(b ^ 0xFF for b in data[start:start + 8])  # torch.load alone reads this fine
    (run / CHECKPOINT).write_bytes(bytes(data))
    assert main(["evaluate", str(run), "--tasks", "2", "--steps", "1", "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: checkpoint {run / CHECKPOINT} is corrupt") and "\n" not in err


def test_any_flipped_bit_in_a_checkpoints_zip_index_is_a_one_line_error_or_harmless(tmp_path):
    # the central directory and end record: some flips read as multi-disk, encrypted or unknown-method archives
    run = train(tiny(1), tmp_path / "run", progress=False)
    data = (run / CHECKPOINT).read_bytes()
    good = load_checkpoint(run / CHECKPOINT)
    damaged = tmp_path / "damaged.pt"
    errors = 0
    # the central directory's offset, from the end record
    (index,) = struct.unpack_from("<I", data, data.rindex(b"PK\x05\x06") + 16)
    assert data[index:index + 4] == b"PK\x01\x02"
    for offset, bit in [(o, b) for o in range(index, len(data)) for b in range(8)]:  # every bit of the zip index
        flipped = bytearray(data)
        flipped[offset] ^= 1 << bit
        damaged.write_bytes(bytes(flipped))
        try:
            state = load_checkpoint(damaged)
        except UserError as exc:
            assert str(exc).startswith(f"checkpoint {damaged} is corrupt") and "\n" not in str(exc)
            errors += 1
            continue
        assert all(torch.equal(state["params"][k], good["params"][k]) for k in good["params"])  # a harmless flip
    assert errors > 1000


def test_an_edited_config_toml_that_no_longer_fits_its_checkpoint_is_named(tmp_path, capsys):
    run = train(tiny(1), tmp_path / "run", progress=False)
    text = (run / "config.toml").read_text()
    (run / "config.toml").write_text(text.replace("hidden_sizes = [8]", "hidden_sizes = [16]"))
    assert main(["evaluate", str(run), "--tasks", "2", "--steps", "1", "--episodes", "1"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {run / 'config.toml'} disagrees with its checkpoint on "
                                               "'hidden_sizes' ([16] vs [8] saved); restore the file or train a new run")
    # the keys a resume may change are not a disagreement
    (run / "config.toml").write_text(text.replace("iterations = 1", "iterations = 5"))
    assert main(["evaluate", str(run), "--tasks", "2", "--steps", "1", "--episodes", "1"]) == 0


def test_a_negative_seed_reaching_the_seed_hashing_is_named():
    from metarl.seeding import TRAIN, derive_seed

    with pytest.raises(ValueError, match=r"seeds and seed keys must be >= 0, got -3 in \[0, 5, -3\]"):
        derive_seed(TRAIN, 5, -3)
    assert derive_seed(TRAIN, 5, 3) != derive_seed(TRAIN, 3, 5)  # order matters


def test_evaluate_json_has_one_entry_per_step(tmp_path, capsys):
    run = train(tiny(1), tmp_path / "run", progress=False)
    assert main(["evaluate", str(run), "--tasks", "3", "--steps", "2", "--episodes", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["env"] == "metarl/Navigation2D-v0" and result["tasks"] == 3
    assert len(result["returns"]) == len(result["ci95"]) == 3
    assert result["step_sizes"] == [0.5, 0.25]
    # deterministic: the same call gives the same numbers
    again = evaluate_run(run, num_tasks=3, steps=2, episodes=2)
    assert again["returns"] == result["returns"]


def test_resuming_a_finished_run_changes_none_of_its_files(tmp_path, capsys):
    run = train(tiny(2), tmp_path / "r", progress=False)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    train(tiny(2, "num_threads=2"), run, resume=True, progress=False)  # a thread count may change on resume
    train(tiny(1), run, resume=True, progress=False)  # fewer iterations than trained: nothing to undo either
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert capsys.readouterr().err.count("already trained to iteration 2; nothing to do") == 2
    random_run = train(tiny(3, 'method="random"'), tmp_path / "random", progress=False)
    before = {p.relative_to(random_run): p.read_bytes() for p in random_run.rglob("*") if p.is_file()}
    train(tiny(3, 'method="random"'), random_run, resume=True, progress=False)
    assert {p.relative_to(random_run): p.read_bytes() for p in random_run.rglob("*") if p.is_file()} == before


def test_a_baseline_resumes_under_a_changed_maml_objective_and_a_maml_run_does_not(tmp_path):
    """A paper row may change its MAML objective without retraining its pretrained and oracle runs."""
    objective = ["num_inner_steps=2", "meta_step_weights=[1, 1]", "meta_pre_weight=1.0", "first_order=true",
                 'inner_objective="lvc"']
    straight = train(tiny(2, 'method="pretrained"'), tmp_path / "straight", progress=False)
    run = train(tiny(1, 'method="pretrained"'), tmp_path / "run", progress=False)
    train(tiny(2, 'method="pretrained"', *objective), run, resume=True, progress=False)
    a, b = params_of(straight), params_of(run)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the keys were not read
    assert (run / "config.toml").read_text() == (straight / "config.toml").read_text()  # nor recorded
    maml = train(tiny(1), tmp_path / "maml", progress=False)
    with pytest.raises(UserError, match="'num_inner_steps' differs"):
        train(tiny(2, *objective), maml, resume=True, progress=False)


def test_baselines_train_without_adaptation(tmp_path):
    initial = GaussianMLPPolicy(2, 2, hidden_sizes=(8,)).init_params(torch.Generator().manual_seed(0))
    random_run = train(tiny(3, 'method="random"'), tmp_path / "random", progress=False)
    state = load_checkpoint(random_run / CHECKPOINT)
    assert state["iteration"] == 0 and all(torch.equal(state["params"][k], initial[k]) for k in initial)

    pretrained = params_of(train(tiny(2, 'method="pretrained"'), tmp_path / "pretrained", progress=False))
    assert any(not torch.equal(pretrained[k], initial[k]) for k in initial)
    rows = [json.loads(line) for line in (tmp_path / "pretrained" / METRICS).read_text().splitlines()]
    # no inner step: the episodes before and after "adaptation" are the same batch
    assert all(r["return_pre"] == r["return_post"] and r["inner_loss"] == 0.0 for r in rows)

    oracle = params_of(train(tiny(1, 'method="oracle"'), tmp_path / "oracle", progress=False))
    assert oracle["l0.weight"].shape == (8, 4)  # the oracle sees its position and the goal


def test_shipped_navigation_policy_loads_and_adapts():
    run = Path(__file__).resolve().parents[1] / "experiments" / "results" / "navigation2d" / "maml"
    result = evaluate_run(run, num_tasks=4, steps=1, episodes=4)
    assert result["iteration"] == 100
    # one inner step of the meta-learned policy closes most of the gap to the goal
    assert result["returns"][1] > result["returns"][0] + 10
    # the paper row's directory stands for its MAML run (`metarl adapt experiments/results/navigation2d`)
    assert evaluate_run(run.parent, num_tasks=4, steps=1, episodes=4) == result


# meta-RL runs are experiments/results/ROW/METHOD/ (the supervised ones sit one level up)
SHIPPED_RUNS = sorted(str(p.parent.relative_to(p.parents[4]))
                      for p in (Path(__file__).resolve().parents[1] / "experiments" / "results").glob("*/*/checkpoint.pt"))


@pytest.mark.parametrize("run", SHIPPED_RUNS)
def test_every_shipped_rl_run_loads_and_adapts(run):
    """Each shipped checkpoint loads (weights only) and adapts one step on a few held-out tasks."""
    run_dir = Path(__file__).resolve().parents[1] / run
    config, state = load_run(run_dir, paper_row=False)
    result = evaluate_run(run_dir, num_tasks=2, steps=1, episodes=2)
    assert result["env"] == config.env and result["iteration"] == int(state["iteration"])
    assert len(result["returns"]) == 2 and all(math.isfinite(r) for r in result["returns"])


def test_later_inner_steps_use_the_scaled_learning_rate_when_training(monkeypatch):
    # with two inner steps the second one, at sampling and in the meta-update, uses inner_lr * later_lr_scale
    from metarl.training import meta_iteration

    config = tiny(1, "num_inner_steps=2", "later_lr_scale=0.3")
    env, policy, learner = parts(config)
    seen = {"inner": [], "step": None}
    real_inner, real_step = learner.sampling_step, learner.step
    monkeypatch.setattr(learner, "sampling_step", lambda p, e, lr: seen["inner"].append(lr) or real_inner(p, e, lr))
    monkeypatch.setattr(learner, "step", lambda p, t, v, lrs=None, curvatures=None: seen.__setitem__("step", lrs)
                        or real_step(p, t, v, lrs, curvatures))
    params = policy.init_params(torch.Generator().manual_seed(0))
    meta_iteration(config, env, policy, learner, params, 0)
    assert seen["inner"][:2] == pytest.approx([0.5, 0.15])
    assert seen["step"] == pytest.approx([0.5, 0.15])


def test_a_run_directory_is_trained_by_one_process_at_a_time(tmp_path):
    from metarl.checkpoint import LOCK, exclusive_run

    run = tmp_path / "run"
    train(tiny(1), run, progress=False)
    with exclusive_run(run):  # another process training it (the lock is per open file, so this one counts)
        with pytest.raises(UserError, match="being trained by another process"):
            train(tiny(2), run, resume=True, progress=False)
    assert [json.loads(line)["iteration"] for line in (run / METRICS).read_text().splitlines()] == [1]
    train(tiny(2), run, resume=True, progress=False)  # free again
    assert load_checkpoint(run / CHECKPOINT)["iteration"] == 2
    assert not (run / LOCK).exists()


@pytest.mark.parametrize("extra", [("num_inner_steps=1",), ("num_inner_steps=2", "later_lr_scale=0.5")])
def test_the_meta_update_with_the_samplers_curvature_equals_one_computing_its_own(extra):
    from metarl.training import sample_meta_batch

    config = tiny(1, *extra)
    env, policy, learner = parts(config)
    params = policy.init_params(torch.Generator().manual_seed(0))
    batch = sample_meta_batch(config, env, policy, learner, params, 0)
    assert batch.curvatures is not None and len(batch.curvatures) == config.num_inner_steps
    reused, reused_info = learner.step(params, batch.train_episodes, batch.valid_episodes, batch.lrs, batch.curvatures)
    own, own_info = learner.step(params, batch.train_episodes, batch.valid_episodes, batch.lrs)
    assert reused_info == own_info and reused_info["accepted"] == 1.0
    for k in params:
        torch.testing.assert_close(reused[k], own[k], rtol=0, atol=0)
    # first order has no Hessian to share
    learner.first_order = True
    assert sample_meta_batch(config, env, policy, learner, params, 0).curvatures is None


EXPERIMENT_CONFIGS = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "experiments").glob("*.toml"))


@pytest.mark.parametrize("name", EXPERIMENT_CONFIGS)
def test_every_experiment_config_loads_and_validates(name):
    """A renamed or mistyped key in a shipped config is a one-line error at `metarl train`; catch it here."""
    import tomllib

    from metarl.supervised.config import SupervisedConfig

    path = Path(__file__).resolve().parents[1] / "experiments" / name
    schema = SupervisedConfig if "task" in tomllib.loads(path.read_text()) else TrainConfig
    config = load_config(schema, path)  # unknown keys and bad values raise UserError here
    if schema is TrainConfig:
        assert config.env.startswith("metarl/")


def test_the_training_seed_draws_the_iterations_tasks_and_rollouts():
    from metarl.training import sample_meta_batch

    rewards = {}
    for seed in (0, 0, 1):
        config = tiny(1, f"seed={seed}")
        env, policy, learner = parts(config)
        params = policy.init_params(torch.Generator().manual_seed(0))  # the same parameters: only the draws differ
        batch = sample_meta_batch(config, env, policy, learner, params, 0)
        rewards.setdefault(seed, []).append(batch.train_episodes[0].rewards)
        env.close()
    assert torch.equal(rewards[0][0], rewards[0][1])  # a seed replays
    assert not torch.equal(rewards[0][0], rewards[1][0])


def test_a_config_without_evaluation_steps_is_valid():
    assert tiny(1, "eval_steps=0").eval_steps == 0  # documented: eval_steps >= 0


@pytest.mark.parametrize("item", ["later_lr_scale=0", "later_lr_scale=-0.5", "later_lr_scale=nan", "ls_ratio=0",
                                  "ls_ratio=1.5", "ls_ratio=-0.8"])
def test_out_of_range_step_scales_are_refused(item):
    key = item.split("=")[0]
    with pytest.raises(UserError, match=key):
        tiny(1, item)


def test_the_policy_std_is_init_std_times_the_action_boxs_half_width():
    config = tiny(1, "init_std=0.7")
    env = make_env(config, 1, 1)
    try:
        policy = make_policy(config, env)
        half = torch.as_tensor((env.action_high - env.action_low) / 2, dtype=torch.float32)
    finally:
        env.close()
    params = policy.init_params(torch.Generator().manual_seed(0))
    _, log_std = policy.dist_params(params, torch.zeros(4, env.observation_dim))
    torch.testing.assert_close(log_std.exp(), (0.7 * half).expand(4, -1))


def test_a_discrete_action_env_gets_a_categorical_policy():
    policy = make_policy(tiny(1), SimpleNamespace(num_actions=3, observation_dim=4))
    assert isinstance(policy, CategoricalMLPPolicy)
    params = policy.init_params(torch.Generator().manual_seed(0))
    (log_probs,) = policy.dist_params(params, torch.zeros(5, 4))
    assert log_probs.shape == (5, 3)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(5))


def test_every_learner_setting_of_the_config_reaches_the_learner():
    config = tiny(1, "num_inner_steps=2", "meta_step_weights=[1.0, 3.0]", "meta_pre_weight=2.0", "baseline_obs_clip=3.0",
                  "gamma=0.9", "gae_lambda=0.8", "max_kl=0.02", "cg_damping=0.001", "ls_ratio=0.5",
                  "ls_max_steps=4", "fisher_subsample=0.5", "first_order=true", "normalize_advantages=false",
                  "inner_objective=\"lvc\"")
    learner = make_learner(config, GaussianMLPPolicy(3, 2, hidden_sizes=(5,)))
    for key in ("inner_lr", "first_order", "gamma", "gae_lambda", "max_kl", "cg_iters", "cg_damping", "ls_ratio",
                "ls_max_steps", "normalize_advantages", "baseline_obs_clip", "fisher_subsample", "meta_pre_weight",
                "inner_objective"):
        assert getattr(learner, key) == getattr(config, key), key
    # the objective it optimizes: w0 = 2 on theta, then 1 and 3 on the two steps, normalized
    assert learner.scored_stages(2) == ([0, 1, 2], [2 / 6, 1 / 6, 3 / 6])


def test_every_draw_of_an_iteration_has_its_own_seed_and_the_post_update_batch_is_fresh(monkeypatch):
    import metarl.training as training

    config = tiny(1, "num_inner_steps=2", "inner_lr=1e-9")  # adapted policies ~ theta: a reused seed would replay
    env = training.make_env(config, 2, 2)
    try:
        policy = training.make_policy(config, env)
        learner = training.make_learner(config, policy)
        seeds = []
        real_tasks, real_sample = env.sample_tasks, training.sample_episodes
        monkeypatch.setattr(env, "sample_tasks", lambda n, seed=None: seeds.append(seed) or real_tasks(n, seed=seed))
        monkeypatch.setattr(training, "sample_episodes",
                            lambda *a, seed, **k: seeds.append(seed) or real_sample(*a, seed=seed, **k))
        params = policy.init_params(torch.Generator().manual_seed(0))
        batch = training.sample_meta_batch(config, env, policy, learner, params, 3)
    finally:
        env.close()
    assert len(seeds) == 4 and len(set(seeds)) == 4, seeds  # tasks, two train batches, the valid batch
    batches = [*batch.train_episodes, batch.valid_episodes]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.allclose(batches[i].actions, batches[j].actions), (i, j)


def test_the_logged_pre_update_return_is_thetas_own(monkeypatch):
    import metarl.training as training

    config = tiny(1, "num_inner_steps=2")
    env = training.make_env(config, 2, 2)
    try:
        policy = training.make_policy(config, env)
        learner = training.make_learner(config, policy)
        params = policy.init_params(torch.Generator().manual_seed(0))
        batch = training.sample_meta_batch(config, env, policy, learner, params, 0)  # the same draws (seeded)
        monkeypatch.setattr(learner, "step", lambda p, *a, **k: (p, {}))  # the update is not under test
        _, row = training.meta_iteration(config, env, policy, learner, params, 0)
    finally:
        env.close()
    pre = float(batch.train_episodes[0].undiscounted_returns().mean())
    assert pre != pytest.approx(float(batch.train_episodes[1].undiscounted_returns().mean()))  # can fail
    assert row["return_pre"] == pytest.approx(pre)
    assert row["return_post"] == pytest.approx(float(batch.valid_episodes.undiscounted_returns().mean()))


def test_the_run_seed_draws_the_initialization(tmp_path):
    saved = {}
    for seed in (1, 2):
        config = tiny(1, "method=\"random\"", f"seed={seed}")  # a random initialization: saved untrained
        train(config, tmp_path / str(seed), progress=False)
        saved[seed] = load_checkpoint(tmp_path / str(seed) / CHECKPOINT)["params"]
    env = make_env(tiny(1), 1, 1)
    try:
        policy = make_policy(tiny(1), env)
    finally:
        env.close()
    for seed, params in saved.items():
        expected = policy.init_params(torch.Generator().manual_seed(seed))
        assert all(torch.equal(params[k], expected[k]) for k in expected), seed
    assert not all(torch.equal(saved[1][k], saved[2][k]) for k in saved[1])


def test_a_paper_row_stands_for_its_maml_run_only_when_asked(tmp_path):
    (tmp_path / "row" / "maml").mkdir(parents=True)
    (tmp_path / "row" / "maml" / "config.toml").write_text("")
    assert run_dir_of(tmp_path / "row") == tmp_path / "row" / "maml"
    with pytest.raises(UserError, match="not a run directory"):
        run_dir_of(tmp_path / "row", paper_row=False)
