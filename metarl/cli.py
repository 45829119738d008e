"""``metarl`` command line: argument parsing only; every command lives in its module."""

from __future__ import annotations

import argparse
import sys

from metarl.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metarl", description="Meta-RL with MAML (TRPO outer loop).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from metarl.supervised.cli import add_supervised_parser

    add_supervised_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
