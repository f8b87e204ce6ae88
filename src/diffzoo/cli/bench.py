"""``diffzoo bench NAME``: benchmark commands that print tables and write ``docs/results/``.

Each benchmark module exposes ``register(bench_subparsers)``; this file lists them.
"""

from __future__ import annotations

import argparse

from diffzoo.bench import (
    accel,
    conditioning,
    discrete,
    distill,
    editing,
    forensics,
    inverse,
    provenance,
    quant,
    samplers,
)

BENCHES = (samplers, editing, discrete, inverse, distill, conditioning, quant, forensics, provenance, accel)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark and print its table")
    bsub = p.add_subparsers(dest="bench", required=True)
    for mod in BENCHES:
        mod.register(bsub)
