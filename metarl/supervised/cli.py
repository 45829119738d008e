"""``metarl supervised train|evaluate|figure``: argument parsing; the work lives in train.py / evaluate.py."""

from __future__ import annotations

import argparse


def _train(args: argparse.Namespace) -> int:
    from metarl.supervised.train import train_from_cli

    return train_from_cli(args.config, out=args.out, seed=args.seed, overrides=args.set or [], resume=args.resume)


def _evaluate(args: argparse.Namespace) -> int:
    from metarl.supervised.evaluate import evaluate_from_cli

    return evaluate_from_cli(args.run_dir, as_json=args.json, tasks=args.tasks, shots=args.shots, steps=args.steps,
                             inner_lrs=args.inner_lr, val_tasks=args.val_tasks)


def _figure(args: argparse.Namespace) -> int:
    from metarl.supervised.evaluate import figure_from_cli

    return figure_from_cli(args.maml_run, args.baseline_run, out=args.out)


def add_supervised_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``supervised`` with its ``train``, ``evaluate`` and ``figure`` subcommands to ``sub``."""
    parser = sub.add_parser("supervised", help="MAML / Reptile on sinusoid regression and few-shot images")
    commands = parser.add_subparsers(dest="supervised_command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="meta-train from a TOML config")
    train.add_argument("config", help="TOML config (see experiments/sinusoid*.toml, omniglot*.toml)")
    train.add_argument("--out", help="run folder (default: runs/<config name>)")
    train.add_argument("--seed", type=int, help="override the config's seed")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its checkpoint (only 'iterations' and 'threads' may change, "
                            "and meta_lr milestones may be added from the saved iteration on)")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a trained run on held-out tasks")
    evaluate.add_argument("run_dir", help="run folder written by 'metarl supervised train'")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    evaluate.add_argument("--tasks", type=int, help="number of held-out tasks (default: the config's eval_tasks)")
    evaluate.add_argument("--shots", type=int, help="support examples per class at test time (default: the config's shots)")
    evaluate.add_argument("--steps", type=int, help="adaptation steps at test time (default: the config's eval_steps)")
    evaluate.add_argument("--inner-lr", type=float, nargs="+", metavar="LR",
                          help="test step size (default: the config's eval_inner_lr, else inner_lr); given several, "
                               "the best after the last step on --val-tasks validation tasks (images: tasks of the "
                               "training classes, never the test classes) is used")
    evaluate.add_argument("--val-tasks", type=int, default=100,
                          help="validation tasks for choosing among several --inner-lr values (default: 100)")
    evaluate.set_defaults(handler=_evaluate)

    figure = commands.add_parser("figure", help="sinusoid figure: MAML beside the pretrained baseline")
    figure.add_argument("maml_run", help="run folder of a MAML sinusoid model")
    figure.add_argument("baseline_run", help="run folder of the pretrained sinusoid baseline")
    figure.add_argument("--out", required=True, help="image file to write (.png, .pdf, .svg)")
    figure.set_defaults(handler=_figure)
