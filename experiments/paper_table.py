"""Reproduce one row of the MAML paper's RL results: train MAML and its baselines, compare, write a table.

    python experiments/paper_table.py halfcheetah_vel              # full paper settings (hours)
    python experiments/paper_table.py navigation2d --set iterations=20 --tasks 10   # a short run

Each method (maml, pretrained, oracle, random) is trained from ``experiments/ROW.toml`` with
``method=`` set, into ``runs/paper/ROW/<method>`` (``--out``); a run that already has a
checkpoint is continued to the config's ``iterations`` (so rerunning after an interruption
resumes); one already past them is refused, not compared under the smaller count. Then ``metarl compare`` evaluates every run on the same held-out tasks and the script
writes ``table.md`` (ours beside the paper's numbers, with training times and seeds),
``compare.json`` and ``figure5.png`` into the output directory.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script from a checkout, installed or not

import envs  # noqa: E402
from metarl.cli import keep_freed_memory  # noqa: E402
from metarl.checkpoint import load_checkpoint  # noqa: E402
from metarl.compare import compare_runs, plot_curves, step_headings  # noqa: E402
from metarl.config import load_config  # noqa: E402
from metarl.errors import UserError  # noqa: E402
from metarl.training import CHECKPOINT, METHODS, METRICS, TrainConfig, train  # noqa: E402

ROWS = {
    "navigation2d": "2D navigation",
    "halfcheetah_vel": "HalfCheetah, goal velocity",
    "halfcheetah_dir": "HalfCheetah, goal direction",
    "halfcheetah_vel_rllab": "HalfCheetah, goal velocity (the paper's rllab cheetah)",
    "halfcheetah_dir_rllab": "HalfCheetah, goal direction (the paper's rllab cheetah)",
    "ant_vel": "Ant, goal velocity",
    "ant_dir": "Ant, goal direction",
    "ant_vel_rllab": "Ant, goal velocity (the paper's rllab ant)",
    "ant_dir_rllab": "Ant, goal direction (the paper's rllab ant)",
}
# Finn et al. 2017: mean return after 0, 1, 2, 3 gradient steps; the oracle is one number (it does not adapt).
PAPER = {
    "navigation2d": {"maml": [-40.4, -11.7, -3.3, -3.2], "pretrained": [-40.8, -19.7, -11.7, -8.5], "oracle": [-2.3]},
    "halfcheetah_vel": {"maml": [-129.5, -78.6, -66.6, -60.8], "pretrained": [-158.0, -135.4, -128.5, -133.6],
                        "oracle": [-54.5]},
    "halfcheetah_dir": {"maml": [-50.7, 293.2, 313.5, 315.7], "pretrained": [-43.0, -24.8, -12.9, 19.6],
                        "oracle": [442.7]},
}
PAPER["halfcheetah_vel_rllab"] = PAPER["halfcheetah_vel"]  # the paper's numbers come from rllab's cheetah
PAPER["halfcheetah_dir_rllab"] = PAPER["halfcheetah_dir"]
# What the table of a gymnasium-cheetah row (one whose paper numbers are its `_rllab` twin's) says beside them.
NOT_THE_PAPERS_ENV = ("The paper's numbers come from rllab's cheetah (`{twin}`); this row's gymnasium cheetah runs "
                      "{episode}, against the paper's {twin_episode}, so its returns are not comparable with them.")


def episode_duration(env_id: str) -> str:
    """An environment's episode, read off the environment: e.g. '10 s episodes (200 steps of 0.05 s)'."""
    env = envs.make(env_id)
    try:
        steps, dt = env.spec.max_episode_steps, env.unwrapped.dt
    finally:
        env.close()
    return f"{steps * dt:g} s episodes ({steps} steps of {dt:g} s)"


def training_seconds(run_dir: Path) -> float:
    """Sampling plus update seconds over every logged iteration (across resumes); 0 for an untrained run."""
    path = run_dir / METRICS
    if not path.exists():
        return 0.0
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sum(row["sampling_s"] + row["update_s"] for row in rows)


def trained_iterations(run_dir: Path) -> int:
    """The iteration a run's checkpoint holds; 0 when it has none."""
    return int(load_checkpoint(run_dir / CHECKPOINT)["iteration"]) if (run_dir / CHECKPOINT).exists() else 0


def train_methods(row: str, out: Path, methods: Sequence[str], overrides: Sequence[str],
                  progress: bool) -> dict[str, dict[str, Any]]:
    """Train (or continue) one run per method; returns each run's directory, config and wall seconds."""
    config_path = ROOT / "experiments" / f"{row}.toml"
    configs = {m: load_config(TrainConfig, config_path, [*overrides, f"method={m}"]) for m in methods}  # fail early
    for method, config in configs.items():  # a run trained past the count asked for would be labelled with it
        done = trained_iterations(out / method)
        if config.method != "random" and done > config.iterations:
            raise UserError(f"{out / method} already holds {done} iterations, more than the {config.iterations} asked "
                            f"for; give another --out (or --set iterations={done} to compare it as it is)")
    runs = {}
    for method, config in configs.items():
        run_dir = out / method
        print(f"training {method} -> {run_dir}", flush=True)
        start = time.perf_counter()
        train(config, run_dir, resume=(run_dir / CHECKPOINT).exists(), progress=progress)
        runs[method] = {"run_dir": run_dir, "config": config, "wall_s": time.perf_counter() - start}
    return runs


def _cell(mean: float | None, ci: float | None = None) -> str:
    if mean is None:
        return "—"
    return f"{mean:.1f}" if ci is None else f"{mean:.1f} ± {ci:.1f}"


def markdown(row: str, result: dict[str, Any], runs: dict[str, dict[str, Any]], compare_s: float,
             command: str) -> str:
    """The paper-style table (ours beside the paper's numbers), then how each run was made."""
    steps = result["steps"]
    heads = step_headings(steps)
    seeds = result.get("seeds", [result.get("seed")])
    draws = (f"evaluation seed {seeds[0]}" if len(seeds) == 1 else
             f"evaluation seeds {', '.join(map(str, seeds))}: {len(seeds)} draws of {result['tasks'] // len(seeds)} pooled")
    lines = [f"# MAML paper table: {ROWS[row]}", "",
             f"Mean return ± 95% CI over {result['tasks']} held-out tasks ({draws}), "
             f"{result['episodes_per_step']} episodes per task and step, on `{result['env']}`. MAML adapts with "
             f"its evaluation protocol; each baseline with one step size, the best after {steps} steps on "
             f"{result['validation_tasks']} separate validation tasks. Paper: Finn, Abbeel, Levine (2017); "
             "its oracle is one number (no adaptation).", "",
             "| method | " + " | ".join(heads) + " | step sizes |",
             "|---" * (len(heads) + 2) + "|"]
    paper = PAPER.get(row, {})
    for name, entry in result["methods"].items():
        cells = [_cell(r, c) for r, c in zip(entry["returns"], entry["ci95"])]
        lrs = ", ".join(f"{lr:g}" for lr in entry["step_sizes"]) or "—"
        lines.append(f"| {name} (ours) | " + " | ".join(cells) + f" | {lrs} |")
        if entry["method"] in paper:
            reference = paper[entry["method"]][: steps + 1]
            cells = [_cell(reference[k] if k < len(reference) else None) for k in range(steps + 1)]
            lines.append(f"| {entry['method']} (paper) | " + " | ".join(cells) + " | |")
    if not paper:
        lines += ["", "No paper numbers are recorded for this row."]
    elif f"{row}_rllab" in PAPER:
        twin = f"{row}_rllab"
        twin_env = load_config(TrainConfig, ROOT / "experiments" / f"{twin}.toml").env
        lines += ["", NOT_THE_PAPERS_ENV.format(twin=twin, episode=episode_duration(result["env"]),
                                                twin_episode=episode_duration(twin_env))]
    lines += ["", "## Runs", "",
              "| method | run directory | iterations | training seed | training time (s) | wall time here (s) |",
              "|---|---|---|---|---|---|"]
    for method, run in runs.items():
        config = run["config"]
        iterations = trained_iterations(run["run_dir"])
        lines.append(f"| {method} | `{run['run_dir']}` | {iterations} | {config.seed} | "
                     f"{training_seconds(run['run_dir']):.0f} | {run['wall_s']:.0f} |")
    lines += ["", f"Comparison: {compare_s:.0f} s. Training time sums each iteration's sampling and update "
              "seconds from `metrics.jsonl` (across resumes); wall time is this invocation's.", "",
              f"Command: `{command}`", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train MAML and its baselines for one paper row, compare, "
                                                 "write the markdown table.")
    parser.add_argument("row", choices=sorted(ROWS), help="the paper row (experiments/ROW.toml)")
    parser.add_argument("--out", type=Path, help="output directory (default: runs/paper/ROW)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key of every method's run (repeatable), e.g. iterations=20")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset (default: all four)")
    parser.add_argument("--tasks", type=int, help="held-out tasks (default: the config's eval_tasks, 40)")
    parser.add_argument("--steps", type=int, default=3, help="gradient steps (default 3, as the paper)")
    parser.add_argument("--episodes", type=int, help="episodes per task and step (default: eval_episodes, 20)")
    parser.add_argument("--val-tasks", type=int, default=10, help="validation tasks for baseline step sizes")
    parser.add_argument("--seed", type=int, nargs="+", default=[0], metavar="S",
                        help="evaluation seed; several pool their draws of --tasks tasks (as metarl compare)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def run(args: argparse.Namespace, command: str) -> Path:
    """Train, compare, write ``table.md``, ``compare.json`` and ``figure5.png``; returns the table's path."""
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UserError(f"--methods: unknown method {unknown[0] if unknown else '(none)'} (known: {', '.join(METHODS)})")
    out = args.out or Path("runs") / "paper" / args.row
    runs = train_methods(args.row, out, methods, args.set, progress=not args.no_progress)
    print("comparing", flush=True)
    start = time.perf_counter()
    result = compare_runs([r["run_dir"] for r in runs.values()], num_tasks=args.tasks, steps=args.steps,
                          episodes=args.episodes, seed=args.seed, val_tasks=args.val_tasks,
                          log=lambda line: print(f"  {line}", flush=True))
    compare_s = time.perf_counter() - start
    (out / "compare.json").write_text(json.dumps(result, indent=1) + "\n")
    plot_curves(result, out / "figure5.png")
    table = out / "table.md"
    table.write_text(markdown(args.row, result, runs, compare_s, command))
    return table


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    keep_freed_memory()  # the CLI's heap setting: the meta-update is much slower without it
    args = build_parser().parse_args(argv)
    try:
        table = run(args, shlex.join(["python", "experiments/paper_table.py", *argv]))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or kill: the training in progress saved its checkpoint
        print("interrupted; the runs keep their last checkpoints, and the same command resumes them", file=sys.stderr)
        return 130
    print(table.read_text())
    print(f"wrote {table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
