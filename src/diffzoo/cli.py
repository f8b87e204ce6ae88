"""The ``diffzoo`` command line: ``diffzoo train|sample|bench|demo|invert|edit|restore``.

Each sub-command lives next to the capability it drives and exposes ``register(subparsers)``; this
file only lists them. A capability module that is not present in this build is skipped.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

COMMAND_MODULES = (
    "diffzoo.train.cli",      # train
    "diffzoo.sampling.cli",   # sample
    "diffzoo.bench.cli",      # bench
    "diffzoo.demo",           # demo
    "diffzoo.editing.cli",    # invert, edit
    "diffzoo.inverse.cli",    # restore
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffzoo", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for mod in COMMAND_MODULES:
        if importlib.util.find_spec(mod) is not None:
            importlib.import_module(mod).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, FloatingPointError) as e:
        print(f"diffzoo {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
