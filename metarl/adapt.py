"""``metarl adapt``: adapt a trained run to one goal the user picks, and show what it learned.

``--task velocity=1.5`` (or ``goal=0.3,-0.2``, ``direction=-1``) is validated by the env.
The run's policy is adapted with the evaluation protocol (``inner_lr``, then
``inner_lr * later_lr_scale``; ``--lr`` sets one step size for every step), rolling out
``episodes`` fresh episodes before and after each step, seeded as ``metarl evaluate`` seeds
them. Each step prints the mean return and a plain readout: the mean forward velocity
(locomotion) or the final distance to the goal (navigation). ``--video`` renders the adapted
policy's mean actions headless to MP4 or GIF; ``--plot`` draws the episodes of every step
(navigation: trajectories in the plane; locomotion: forward velocity over time).
``--interactive`` keeps the run loaded and adapts to goal after goal typed at a prompt.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from metarl.errors import UserError
from metarl.output_files import PLOT_SUFFIXES, VIDEO_SUFFIXES, check_output_file, writing
from metarl.seeding import EVALUATE, derive_seed

if TYPE_CHECKING:
    from torch import Tensor

    from metarl.episodes import Episodes
# torch, the envs and the training modules are imported where they are used, so that building the
# CLI's parser (which registers this command) stays fast

QUIT = ("quit", "exit", "q")


@dataclass
class AdaptationStep:
    """What ``k`` gradient steps gave on one task."""

    step: int  # gradient steps taken before these episodes
    lr: float | None  # step size of the step that led here (None before adaptation)
    mean_return: float  # mean undiscounted return over the episodes
    readout: float  # mean forward velocity (m/s) or mean final distance to the goal
    episodes: Episodes  # [1, T, E, ...]: the one task's episodes


def parse_task(env_id: str, text: str) -> dict[str, Any]:
    """``"velocity=1.5"``, ``"goal=0.3,-0.2"`` or a bare ``"1.5"`` (one-key envs) -> a validated task dict.

    ``UserError`` naming the key, value and range (from ``envs.validate_task``), or the value
    that is not a number.
    """
    import envs

    keys = envs.task_keys(env_id)
    text = text.strip()
    if "=" in text:
        key, raw = (part.strip() for part in text.split("=", 1))
    elif len(keys) == 1:
        key, raw = keys[0], text
    else:
        raise UserError(f"give the task as KEY=VALUE (keys: {', '.join(keys)}), got {text!r}")
    value: Any = raw
    if key in keys:  # an unknown key is left for validate_task, whose message lists the known ones
        try:
            numbers = [float(item) for item in raw.split(",")]
        except ValueError:
            raise UserError(f"task key {key!r}: value {raw!r} is not a number") from None
        value = numbers[0] if len(numbers) == 1 else tuple(numbers)
    try:
        return envs.validate_task(env_id, {key: value})
    except ValueError as exc:
        raise UserError(str(exc)) from None


def format_task(task: dict[str, Any]) -> str:
    """``{"goal": (0.3, -0.2)}`` -> ``goal=0.3,-0.2``."""
    return " ".join(f"{k}={','.join(f'{x:g}' for x in np.atleast_1d(v))}" for k, v in task.items())


class Adapter:
    """A run loaded once, ready to adapt to task after task (one env and policy, reused)."""

    def __init__(self, run_dir: str | Path, episodes: int | None = None, seed: int = 0):
        import torch

        from metarl.evaluation import check_seeds
        from metarl.training import load_run, make_env, make_learner, make_policy

        check_seeds([seed])
        self.config, state = load_run(run_dir)
        self.params: dict[str, Tensor] = state["params"]
        self.iteration = int(state["iteration"])
        self.episodes = self.config.eval_episodes if episodes is None else episodes
        if self.episodes < 1:
            raise UserError(f"--episodes must be >= 1, got {self.episodes}")
        self.seed = seed
        torch.set_num_threads(self.config.num_threads)
        self.env = make_env(self.config, 1, self.episodes)
        self.policy = make_policy(self.config, self.env)
        self.learner = make_learner(self.config, self.policy)
        self.navigation = "goal" in self.task_keys
        if not self.navigation:
            self.velocity_index = self.env.velocity_index  # where the torso's x-velocity sits in the observation

    @property
    def task_keys(self) -> list[str]:
        import envs

        return envs.task_keys(self.config.env)

    def parse_task(self, text: str) -> dict[str, Any]:
        return parse_task(self.config.env, text)

    def step_sizes(self, steps: int, lr: float | None = None) -> list[float]:
        """The evaluation protocol's step sizes, or ``lr`` for every step."""
        if steps < 0:
            raise UserError(f"--steps must be >= 0, got {steps}")
        if lr is not None and not (lr > 0 and math.isfinite(lr)):
            raise UserError(f"--lr must be a positive number, got {lr}")
        if lr is not None:
            return [lr] * steps
        from metarl.training import step_sizes

        return step_sizes(self.config.inner_lr, steps, self.config.later_lr_scale)

    def readout(self, episodes: Episodes) -> float:
        """Mean forward velocity over the taken steps (m/s), or the mean final distance to the goal.

        The velocity is the torso's (``qvel[0]`` in the observation). rllab's robots score their centre
        of mass's instead, which the observation does not carry; over an episode the two means differ
        only by how far the torso moved relative to the centre of mass (0.008 m/s on 20 episodes of the
        shipped ant), though step by step they differ more (0.3 m/s rms).
        """
        mask = episodes.mask[0]  # [T, E]
        if self.navigation:
            last = mask.sum(0).long() - 1  # [E] index of each episode's last taken step
            # the reward is minus the distance to the goal after the step
            return float(-episodes.rewards[0].gather(0, last[None])[0].mean())
        velocity = episodes.observations[0, :, :, self.velocity_index]  # [T, E]
        return float(((velocity * mask).sum(0) / mask.sum(0)).mean())

    def adapt(self, task: dict[str, Any], lrs: list[float]) -> tuple[list[AdaptationStep], dict[str, Tensor]]:
        """Sample, step, sample ... on ``task``; returns each step's results and the adapted params [1, ...].

        Rollouts are seeded as in ``metarl.evaluation.adaptation_returns``, so the returns equal its
        row means for the same task, step sizes, episodes and seed.
        """
        from metarl.evaluation import adaptation_rollouts

        results, task_params = [], None
        rollouts = adaptation_rollouts(self.env, self.policy, self.learner, self.params, [task], lrs, self.episodes,
                                       self.seed)
        for k, (batch, task_params) in enumerate(rollouts):
            results.append(AdaptationStep(k, lrs[k - 1] if k else None,
                                          float(batch.mean_return()[0]), self.readout(batch), batch))
        return results, task_params

    def describe_readout(self, task: dict[str, Any]) -> str:
        """The readout column's heading, with the goal it should be read against."""
        if self.navigation:
            return "final distance to goal"
        if "velocity" in task:
            return f"forward velocity m/s (goal {task['velocity']:g})"
        return f"forward velocity m/s (goal: {'forward' if task['direction'] > 0 else 'backward'})"

    def format_steps(self, task: dict[str, Any], results: list[AdaptationStep]) -> str:
        heading = self.describe_readout(task)
        lines = [f"{self.config.env}, task {format_task(task)}: {self.config.method} run at iteration "
                 f"{self.iteration}, {self.episodes} episodes per step",
                 f"{'step':>4}  {'step size':>9}  {'mean return':>11}  {heading}"]
        for r in results:
            lr = "-" if r.lr is None else f"{r.lr:g}"
            lines.append(f"{r.step:>4}  {lr:>9}  {r.mean_return:>11.2f}  {r.readout:>{len(heading)}.3f}")
        return "\n".join(lines)

    def write_video(self, task: dict[str, Any], params: dict[str, Tensor], path: str | Path) -> Path:
        """One episode of ``params`` [1, ...] (mean actions) rendered headless, as MP4 or GIF by ``path``'s suffix."""
        import imageio
        import torch

        import envs

        path = Path(path)
        check_output_file(path, "--video", VIDEO_SUFFIXES)
        env = envs.make(self.config.env, oracle=self.config.method == "oracle", render_mode="rgb_array")
        try:
            env.unwrapped.set_task(task)
            obs, _ = env.reset(seed=derive_seed(EVALUATE, self.seed, 0))
            frames = [env.render()]
            done = False
            while not done:
                obs_t = torch.as_tensor(obs, dtype=torch.float32).view(1, 1, -1)
                action = self.policy.act(params, obs_t, deterministic=True)[0, 0].numpy()
                obs, _, terminated, truncated, _ = env.step(action)
                frames.append(env.render())
                done = terminated or truncated
            fps = env.metadata["render_fps"]
        finally:
            env.close()
        with writing(path, "--video"):
            if path.suffix.lower() == ".gif":
                imageio.mimsave(path, frames, duration=1000 / fps, loop=0)
            else:
                imageio.mimsave(path, frames, fps=fps)
        return path

    def plot(self, task: dict[str, Any], results: list[AdaptationStep], path: str | Path) -> Path:
        """One panel per step: trajectories in the plane (navigation) or forward velocity over time (locomotion)."""
        from matplotlib.figure import Figure  # no pyplot: no global figure state, no display needed
        from matplotlib.patches import Rectangle

        path = Path(path)
        check_output_file(path, "--plot", PLOT_SUFFIXES)
        figure = Figure(figsize=(3.2 * len(results), 3.4), layout="constrained")
        axes = figure.subplots(1, len(results), squeeze=False, sharey=True)[0]
        for ax, r in zip(axes, results):
            obs, mask = r.episodes.observations[0].numpy(), r.episodes.mask[0].numpy().astype(bool)  # [T, E, d], [T, E]
            title = "before adaptation" if r.step == 0 else f"after {r.step} step{'s' if r.step > 1 else ''}"
            ax.set_title(f"{title}\nreturn {r.mean_return:.1f}", fontsize=9)
            for e in range(obs.shape[1]):
                if self.navigation:
                    ax.plot(obs[mask[:, e], e, 0], obs[mask[:, e], e, 1], linewidth=0.8, alpha=0.7)
                else:
                    ax.plot(np.flatnonzero(mask[:, e]), obs[mask[:, e], e, self.velocity_index], linewidth=0.6, alpha=0.5)
            if self.navigation:
                # the square goals are drawn from, the start (origin) and this task's goal
                from envs.navigation import TASK_SPACE

                low, high = TASK_SPACE["goal"].low, TASK_SPACE["goal"].high
                ax.add_patch(Rectangle((low, low), high - low, high - low, fill=False, edgecolor="0.7", linestyle=":"))
                ax.plot(0.0, 0.0, marker="o", color="black", markersize=4, linestyle="none")
                ax.plot(*task["goal"], marker="*", color="red", markersize=12, linestyle="none")
                ax.set_aspect("equal", adjustable="datalim")
                ax.set_xlabel("x")
            else:
                if "velocity" in task:
                    ax.axhline(task["velocity"], color="red", linestyle="--", linewidth=1)
                else:
                    ax.axhline(0.0, color="gray", linewidth=0.8)
                ax.set_xlabel("time step")
        axes[0].set_ylabel("y" if self.navigation else "forward velocity (m/s)")
        figure.suptitle(f"{self.config.env.removeprefix('metarl/')}: {format_task(task)}", fontsize=10)
        with writing(path, "--plot"):
            figure.savefig(path, dpi=110)
        return path

    def show(self, task: dict[str, Any], lrs: list[float], out: TextIO, video: Path | None = None,
             plot: Path | None = None) -> list[AdaptationStep]:
        """Adapt to ``task``, print the steps, write the video and plot if asked."""
        results, params = self.adapt(task, lrs)
        diverged = next((r.step for r in results if not math.isfinite(r.mean_return)), None)
        if diverged is not None:  # e.g. a --lr far too large; a step after it would fail in the baseline fit
            raise UserError(f"the adaptation diverged: the mean return after step {diverged} is not finite "
                            "(is the step size too large?)")
        print(self.format_steps(task, results), file=out)
        if video is not None:
            print(f"video: {self.write_video(task, params, video)}", file=out)
        if plot is not None:
            print(f"plot: {self.plot(task, results, plot)}", file=out)
        out.flush()
        return results

    def close(self) -> None:
        self.env.close()


def interactive(adapter: Adapter, lrs: list[float], lines: TextIO, out: TextIO, video: Path | None = None,
                plot: Path | None = None) -> int:
    """Read goals from ``lines`` until ``quit`` or end of input; returns how many goals were adapted to.

    Bad input prints ``error: ...`` and the prompt comes back. Works with any text stream (a pipe too).
    """
    keys = adapter.task_keys
    example = format_task({k: np.round(v, 1) for k, v in adapter.env.sample_tasks(1, seed=0)[0].items()})
    bare = ", or just the value" if len(keys) == 1 else ""
    print(f"type a goal as {example}{bare}; 'quit' or end of input to stop", file=out)
    done = 0
    while True:
        out.write("goal> ")
        out.flush()
        line = lines.readline()
        if not line:  # end of input
            out.write("\n")
            return done
        if not lines.isatty():  # no terminal echoed it: show the goal, so the transcript reads as typed
            out.write(line if line.endswith("\n") else line + "\n")
        text = line.strip()
        if text.lower() in QUIT:
            return done
        if not text:
            continue
        try:
            task = adapter.parse_task(text)
        except UserError as exc:
            print(f"error: {exc}", file=out)
            continue
        try:
            adapter.show(task, lrs, out, video, plot)
        except UserError as exc:  # a diverged adaptation, an output file that cannot be written: the prompt stays
            print(f"error: {exc}", file=out)
            continue
        done += 1


def _run(args: argparse.Namespace) -> int:
    check_output_file(args.video, "--video", VIDEO_SUFFIXES)
    check_output_file(args.plot, "--plot", PLOT_SUFFIXES)
    if (args.task is None) == (not args.interactive):
        raise UserError("give either --task KEY=VALUE or --interactive")
    adapter = Adapter(args.run_dir, episodes=args.episodes, seed=args.seed)
    try:
        lrs = adapter.step_sizes(args.steps, args.lr)
        if args.interactive:
            interactive(adapter, lrs, sys.stdin, sys.stdout, args.video, args.plot)
        else:
            adapter.show(adapter.parse_task(args.task), lrs, sys.stdout, args.video, args.plot)
    finally:
        adapter.close()
    return 0


RUN_DIR_HELP = "a run directory, or a paper row's (experiments/results/ROW: its MAML run)"  # adapt, evaluate


def add_adapt_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``metarl adapt`` on the CLI's subparsers."""
    p = sub.add_parser("adapt", help="adapt a trained run to a goal you pick; print, render, plot")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                   help=RUN_DIR_HELP)
    p.add_argument("--task", metavar="KEY=VALUE", help="the goal, e.g. velocity=1.5, goal=0.3,-0.2, direction=-1")
    p.add_argument("--interactive", action="store_true", help="prompt for goal after goal (quit or end of input stops)")
    p.add_argument("--steps", type=int, default=3, help="gradient steps (default 3)")
    p.add_argument("--episodes", type=int, help="episodes per step (default: the config's eval_episodes, 20)")
    p.add_argument("--lr", type=float, help="one step size for every step (default: the evaluation protocol's)")
    p.add_argument("--seed", type=int, default=0, help="rollout seed")
    p.add_argument("--video", type=Path, metavar="FILE", help="render the adapted policy to FILE (.mp4 or .gif)")
    p.add_argument("--plot", type=Path, metavar="FILE", help="episodes before and after each step (.png, .pdf, .svg)")
    p.set_defaults(handler=_run)
