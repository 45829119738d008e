"""``metarl`` command line: argument parsing and printing only; the work lives in the modules."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from metarl.errors import UserError


def _train(args: argparse.Namespace) -> int:
    from metarl.config import load_config
    from metarl.evaluation import evaluate_run, format_table
    from metarl.training import TrainConfig, train

    overrides = list(args.set or [])
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    config = load_config(TrainConfig, args.config, overrides)
    if args.resume and args.out is None:
        raise UserError("--resume needs --out RUN_DIR (the run to continue)")
    out = args.out or Path("runs") / f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = train(config, out, resume=args.resume, progress=not args.no_progress)
    print(f"run directory: {run_dir}")
    if args.evaluate:
        print(format_table(evaluate_run(run_dir)))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from metarl.evaluation import check_seeds, evaluate_run, format_table, pool_results

    check_seeds(args.seed)
    results = [evaluate_run(args.run_dir, num_tasks=args.tasks, steps=args.steps, seed=seed, episodes=args.episodes,
                            batch_steps=args.batch_steps) for seed in args.seed]
    result = results[0] if len(results) == 1 else pool_results(results)
    print(json.dumps(result) if args.json else format_table(result))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from metarl.benchmark import config_path, format_report, run_benchmark
    from metarl.config import load_config
    from metarl.training import TrainConfig

    if args.repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {args.repeats}")
    config = load_config(TrainConfig, config_path(args.env), args.set or [])
    result = run_benchmark(config, repeats=args.repeats)
    print(json.dumps(result) if args.json else format_report(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metarl", description="Meta-RL with MAML (TRPO outer loop).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="meta-train a policy from a config (experiments/*.toml)")
    p.add_argument("config", help="TOML config file, e.g. experiments/navigation2d.toml")
    p.add_argument("--out", type=Path, help="run directory (default: runs/<config>-<time>)")
    p.add_argument("--seed", type=int, help="overrides the config's seed")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint (only 'iterations' and 'num_threads' may change; a baseline's run ignores the MAML-only keys)")
    p.add_argument("--evaluate", action="store_true", help="evaluate on held-out tasks after training")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_train)

    from metarl.adapt import RUN_DIR_HELP

    p = sub.add_parser("evaluate", help="adaptation curve of a trained run on held-out tasks")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                   help=RUN_DIR_HELP)
    p.add_argument("--tasks", type=int, help="held-out tasks (default: the config's eval_tasks, 40)")
    p.add_argument("--steps", type=int, help="inner steps (default: the config's eval_steps, 3)")
    p.add_argument("--episodes", type=int, help="episodes per task and step (default: the config's eval_episodes, 20)")
    from metarl.compare import BATCH_STEPS_HELP

    p.add_argument("--batch-steps", type=int, metavar="N", help=BATCH_STEPS_HELP)
    p.add_argument("--seed", type=int, nargs="+", default=[0], metavar="S",
                   help="evaluation seed (a stream disjoint from training); several seeds pool their draws of --tasks tasks")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_evaluate)

    p = sub.add_parser("bench", help="sampling and meta-update speed of one config")
    p.add_argument("--env", default="halfcheetah_vel", help="experiment name (experiments/NAME.toml) or a .toml path")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--repeats", type=int, default=3, help="timings per figure: best of N for rates, median of N meta-iterations")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_bench)

    from metarl.adapt import add_adapt_parser
    from metarl.compare import add_compare_parser

    add_compare_parser(sub)
    add_adapt_parser(sub)
    from metarl.supervised.cli import add_supervised_parser

    add_supervised_parser(sub)
    return parser


def keep_freed_memory() -> None:
    """Serve large tensors from the heap and keep freed memory for reuse (glibc only).

    By default glibc maps every large allocation afresh and unmaps it when freed; the
    meta-update allocates and frees many large temporaries, and faulting in fresh pages
    made it about twice as slow here. The price: the process keeps its peak memory.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_max = -1, -4
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 2**31 - 1)


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
