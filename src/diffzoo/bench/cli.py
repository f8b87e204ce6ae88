"""``diffzoo bench NAME``: benchmark commands that print tables and write ``docs/results/``.

Each benchmark module exposes ``register(bench_subparsers)``; this file lists them.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util

BENCH_MODULES = (
    "diffzoo.bench.samplers",
    "diffzoo.bench.editing",
    "diffzoo.bench.discrete",
    "diffzoo.bench.inverse",
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark and print its table")
    bsub = p.add_subparsers(dest="bench", required=True)
    for mod in BENCH_MODULES:
        if importlib.util.find_spec(mod) is not None:
            importlib.import_module(mod).register(bsub)
