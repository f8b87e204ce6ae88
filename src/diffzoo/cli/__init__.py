"""The ``diffzoo`` command line: ``diffzoo train|sample|bench|demo|invert|edit|restore|selftest|studio``.

One thin module per command, each exposing ``register(subparsers)`` over library functions; this file
lists them with plain imports (a missing module is an ``ImportError``, never a silent skip).
"""

from __future__ import annotations

import argparse
import logging
import sys

from diffzoo.cli import (
    attack,
    bench,
    demo,
    detect,
    distill,
    edit,
    protect,
    quantize,
    restore,
    sample,
    selftest,
    studio,
    train,
    tryon,
    watermark,
)

COMMANDS = (
    train,
    sample,
    bench,
    demo,
    edit,
    restore,
    selftest,
    studio,
    detect,
    protect,
    distill,
    tryon,
    quantize,
    watermark,
    attack,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffzoo", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for mod in COMMANDS:
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError, FloatingPointError) as e:  # OSError: missing files, full disks
        print(f"diffzoo {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
