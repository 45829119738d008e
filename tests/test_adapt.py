"""metarl adapt: task parsing errors, same numbers as the evaluation protocol, the stdin prompt, video and plot."""

import io
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from metarl.adapt import Adapter, parse_task
from metarl.cli import main
from metarl.config import load_config
from metarl.errors import UserError
from metarl.evaluation import adaptation_returns
from metarl.training import TrainConfig, train

TINY = ["env=\"metarl/Navigation2D-v0\"", "meta_batch_size=2", "episodes_per_task=2", "hidden_sizes=[8]",
        "inner_lr=0.5", "checkpoint_every=1", "num_threads=1", "cg_iters=3", "iterations=1"]
FAST = ["--steps", "1", "--episodes", "2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train(load_config(TrainConfig, None, TINY), tmp_path_factory.mktemp("runs") / "nav", progress=False)


def test_tasks_parse_for_each_env_kind():
    assert parse_task("metarl/Navigation2D-v0", "goal=0.3,-0.2") == {"goal": (0.3, -0.2)}
    assert parse_task("metarl/HalfCheetahVel-v0", " velocity = 1.5 ") == {"velocity": 1.5}
    assert parse_task("metarl/HalfCheetahVel-v0", "1.5") == {"velocity": 1.5}  # one key: the bare value
    assert parse_task("metarl/AntDir-v0", "direction=-1") == {"direction": -1.0}
    with pytest.raises(UserError, match="outside the range"):
        parse_task("metarl/AntDir-v0", "direction=0.5")
    with pytest.raises(UserError, match="outside the range"):
        parse_task("metarl/HalfCheetahVel-v0", "velocity=nan")
    with pytest.raises(UserError, match=r"value \(1.0, 2.0\) should be one number in \[0, 2\]"):
        parse_task("metarl/HalfCheetahVel-v0", "velocity=1,2")


@pytest.mark.parametrize("task, message", [
    ("speed=1", "unknown task key 'speed'"),
    ("goal=0.9,0", "task key 'goal': value (0.9, 0.0) is outside the range [-0.5, 0.5]^2"),
    ("goal=0.1", "task key 'goal': value 0.1 should be 2 numbers, each in [-0.5, 0.5]"),
    ("goal=0.1,0.2,0.3", "task key 'goal': value (0.1, 0.2, 0.3) should be 2 numbers, each in [-0.5, 0.5]"),
    ("goal=up,left", "task key 'goal': value 'up,left' is not a number"),
])
def test_bad_task_is_a_one_line_error(run, tmp_path, capsys, task, message):
    video = tmp_path / "out.gif"
    assert main(["adapt", str(run), "--task", task, *FAST, "--video", str(video)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not video.exists()


@pytest.mark.parametrize("args, message", [
    (["--task", "goal=0,0", "--video", "out.avi"], "--video out.avi: the file name must end in .mp4, .gif"),
    ([], "give either --task KEY=VALUE or --interactive"),
    (["--task", "goal=0,0", "--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--task", "goal=0,0", "--lr", "inf"], "--lr must be a positive number, got inf"),  # was nan returns, rc 0
])
def test_bad_options_are_one_line_errors(run, capsys, args, message):
    assert main(["adapt", str(run), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {message}"


def test_unknown_run_directory_is_a_one_line_error(tmp_path, capsys):
    assert main(["adapt", str(tmp_path / "nope"), "--task", "goal=0,0"]) == 2
    assert capsys.readouterr().err.strip() == f"error: run directory not found: {tmp_path / 'nope'}"
    (tmp_path / "plain").mkdir()  # a folder that is no run (nor a paper row)
    for command in (["adapt", str(tmp_path / "plain"), "--task", "goal=0,0"], ["evaluate", str(tmp_path / "plain")]):
        assert main(command) == 2
        assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'plain'} is not a run directory "
                                                   "(it holds no config.toml or checkpoint.pt)")


def test_step_returns_equal_the_evaluation_protocol(run):
    adapter = Adapter(run, episodes=2, seed=3)
    try:
        task = adapter.parse_task("goal=0.3,-0.2")
        lrs = adapter.step_sizes(2)
        results, params = adapter.adapt(task, lrs)
    finally:
        adapter.close()
    assert lrs == [0.5, 0.25] and [r.lr for r in results] == [None, 0.5, 0.25]
    expected = adaptation_returns(adapter.config, adapter.params, [task], lrs, 2, 3)[:, 0]
    assert [r.mean_return for r in results] == pytest.approx(expected.tolist(), rel=1e-6)
    assert params["l0.weight"].shape[0] == 1 and not np.allclose(params["l0.weight"][0], adapter.params["l0.weight"])
    # navigation readout: the final distance is minus the last reward, between 0 and the farthest reachable point
    assert all(0.0 <= r.readout < 11.0 for r in results)


def test_oracle_run_adapts_and_renders_with_the_task_in_its_observations(tmp_path, capsys):
    run = train(load_config(TrainConfig, None, TINY + ["method=oracle"]), tmp_path / "oracle", progress=False)
    adapter = Adapter(run, episodes=2)
    try:
        assert adapter.env.observation_dim == 4  # position, then the goal
        task = adapter.parse_task("goal=-0.4,0.25")
        results, _ = adapter.adapt(task, [0.5])
        assert np.all(results[0].episodes.observations[0, 0, :, 2:].numpy() == np.float32([-0.4, 0.25]))
    finally:
        adapter.close()
    expected = adaptation_returns(adapter.config, adapter.params, [task], [0.5], 2, 0)[:, 0]
    assert [r.mean_return for r in results] == pytest.approx(expected.tolist(), rel=1e-6)
    gif = tmp_path / "oracle.gif"
    assert main(["adapt", str(run), "--task", "goal=-0.4,0.25", *FAST, "--lr", "0.5", "--video", str(gif)]) == 0
    assert "oracle run at iteration 1" in capsys.readouterr().out
    with Image.open(gif) as image:
        assert image.format == "GIF"


def test_interactive_prompt_survives_bad_input(run, monkeypatch, capsys):
    typed = "speed=1\ngoal=0.9,0\ngoal=a,b\n\ngoal=0.3,-0.2\n0.1,0.1\nquit\ngoal=0.2,0.2\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(typed))
    assert main(["adapt", str(run), "--interactive", *FAST]) == 0
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if "error: " in line]
    assert len(errors) == 3
    assert "unknown task key 'speed'" in errors[0] and "outside the range" in errors[1] and "not a number" in errors[2]
    # the two good goals were adapted to, the one after 'quit' was not
    assert "task goal=0.3,-0.2" in out and "task goal=0.1,0.1" in out and "goal=0.2,0.2:" not in out
    assert out.count("goal> ") == 7 and "goal> speed=1\nerror: unknown task key" in out  # piped input is echoed


def test_interactive_prompt_survives_an_error_after_the_adaptation(run, tmp_path, monkeypatch, capsys):
    # the plot's folder is replaced by a file while the prompt waits, so the second goal's plot fails after
    # its adaptation: a one-line error, and the prompt comes back for the third
    plot = tmp_path / "plots" / "goal.png"
    goals = iter(["goal=0.1,0.1\n", "goal=0.2,0.2\n", "goal=0.3,0.3\n"])

    class Typed(io.StringIO):
        def readline(self, *args):
            line = next(goals, "")
            if line.startswith("goal=0.2"):
                plot.unlink()
                plot.parent.rmdir()
                plot.parent.write_text("in the way")
            return line

    monkeypatch.setattr("sys.stdin", Typed())
    assert main(["adapt", str(run), "--interactive", *FAST, "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: --plot {plot}: {plot.parent} is a file, not a folder"] * 2
    assert all(f"task goal={g}" in out for g in ("0.1,0.1", "0.2,0.2", "0.3,0.3")) and out.count("goal> ") == 4


def test_output_files_that_cannot_be_written_are_refused_before_adapting(run, tmp_path, capsys):
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "afile").write_text("")
    for option, path, message in [("--plot", tmp_path / "folder.png", "a folder of that name exists; give a file name"),
                                  ("--video", tmp_path / "afile" / "x.gif", f"{tmp_path / 'afile'} is a file, not a folder"),
                                  ("--plot", tmp_path / ("x" * 300 + ".png"), "File name too long")]:
        assert main(["adapt", str(run), "--task", "goal=0,0", *FAST, option, str(path)]) == 2
        captured = capsys.readouterr()
        assert captured.err.strip() == f"error: {option} {path}: {message}" and captured.out == ""


def test_interactive_ends_at_end_of_input(run, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("goal=0,0.4"))  # no newline, no quit
    assert main(["adapt", str(run), "--interactive", *FAST]) == 0
    out = capsys.readouterr().out
    assert "task goal=0,0.4" in out and out.count("goal> ") == 2


def test_video_gif_and_trajectory_plot_are_valid_files(run, tmp_path, capsys):
    video, gif, plot = tmp_path / "v" / "adapted.mp4", tmp_path / "adapted.gif", tmp_path / "trajectories.png"
    assert main(["adapt", str(run), "--task", "goal=0.3,-0.2", *FAST, "--video", str(video), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert f"video: {video}" in out and f"plot: {plot}" in out and "final distance to goal" in out
    # decode the whole file with ffmpeg (imageio's reader leaves its pipes open): 256x256 RGB frames
    decoded = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(video), "-f", "rawvideo",
                              "-pix_fmt", "rgb24", "-"], capture_output=True, check=True)
    frame_bytes = 256 * 256 * 3
    assert decoded.stderr == b"" and len(decoded.stdout) % frame_bytes == 0
    assert 2 <= len(decoded.stdout) // frame_bytes <= 101  # one frame per step plus the start, up to 100 steps
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width > 1.5 * image.height  # two panels (0 and 1 step) side by side
    assert main(["adapt", str(run), "--task", "goal=0.3,-0.2", *FAST, "--video", str(gif)]) == 0
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.size == (256, 256)


@pytest.mark.parametrize("env_id", ["metarl/HalfCheetahVel-v0", "metarl/AntDir-v0"])
def test_locomotion_readout_reads_the_torso_forward_velocity(tmp_path, env_id):
    run = train(load_config(TrainConfig, None, TINY + ["method=random", f"env=\"{env_id}\""]), tmp_path / "run",
                progress=False)
    adapter = Adapter(run, episodes=2)
    try:
        obs = adapter.env.reset(seed=1)
        qvel = adapter.env.get_state()[1]
        assert np.array_equal(obs[:, adapter.velocity_index], qvel[:, 0])  # qvel[0]: the torso's x velocity
        task = adapter.parse_task("direction=-1" if "Dir" in env_id else "velocity=1.5")
        assert "forward velocity m/s" in adapter.describe_readout(task)
    finally:
        adapter.close()


def test_navigation_readout_is_each_episodes_distance_after_its_last_taken_step(run):
    from metarl.episodes import Episodes

    adapter = Adapter(run, episodes=2)
    rewards = -torch.arange(1.0, 11.0).view(1, 5, 2)  # minus the distance after each step
    mask = torch.ones(1, 5, 2)
    mask[0, 3:, 0] = 0  # the first episode reached its goal at step 2 (index)
    episodes = Episodes(torch.zeros(1, 5, 2, 2), torch.zeros(1, 5, 2, 2), rewards, mask)
    assert adapter.readout(episodes) == pytest.approx((5.0 + 10.0) / 2)
    adapter.close()


def test_a_diverged_adaptation_is_a_one_line_error_not_a_table_of_nan(run):
    adapter = Adapter(run, episodes=2)
    adapter.params = {k: v.clone() for k, v in adapter.params.items()}
    adapter.params["l0.weight"].fill_(float("nan"))  # a policy whose actions, and so returns, are NaN
    out = io.StringIO()
    with pytest.raises(UserError, match=r"the adaptation diverged: the mean return after step 0 is not finite"):
        adapter.show({"goal": (0.1, 0.1)}, [], out)  # the last step's returns: nothing after them would catch it
    with pytest.raises(UserError, match=r"linear baseline fit failed for tasks \[0\]"):
        adapter.show({"goal": (0.1, 0.1)}, [0.5], out)  # a step after them: its baseline fit is the one line
    assert out.getvalue() == ""  # no table of nan printed before the message
    adapter.close()


def _readout_only(navigation, velocity_index=None):
    """An Adapter with just the attributes its readouts use (no run, no envs)."""
    adapter = object.__new__(Adapter)
    adapter.navigation, adapter.velocity_index = navigation, velocity_index
    return adapter


def test_the_velocity_readout_is_the_mean_over_the_steps_each_episode_took():
    from metarl.episodes import Episodes

    adapter = _readout_only(False, 2)
    obs = torch.zeros(1, 4, 2, 5)  # [tasks, T, E, obs]
    obs[0, :, :, 2] = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    obs[0, :, :, 1] = 100.0  # the neighbouring column must not be read
    mask = torch.ones(1, 4, 2)
    mask[0, 2:, 0] = 0  # episode 0 ended after two steps
    episodes = Episodes(obs, torch.zeros(1, 4, 2, 1), torch.zeros(1, 4, 2), mask)
    assert adapter.readout(episodes) == pytest.approx(((1 + 3) / 2 + (2 + 4 + 6 + 8) / 4) / 2)
    assert "backward" in Adapter.describe_readout(adapter, {"direction": -1.0})
    assert "forward)" in Adapter.describe_readout(adapter, {"direction": 1.0})


def test_lr_sets_every_steps_size(run):
    adapter = Adapter(run, episodes=1)
    try:
        assert adapter.step_sizes(3, 0.2) == [0.2] * 3 and adapter.step_sizes(1, 0.2) == [0.2]
        assert adapter.step_sizes(0, 0.2) == []
    finally:
        adapter.close()
