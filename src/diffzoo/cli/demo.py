"""``diffzoo demo``: a tour of the shipped zoo in a few minutes on a laptop CPU (see :mod:`diffzoo.demo`)."""

from __future__ import annotations

import argparse

from diffzoo.demo import run_demo


def _run(args: argparse.Namespace) -> int:
    print(run_demo(args.out_dir, args.quick, args.seed))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="tour the shipped zoo: samplers, editing, discrete, inverse problems",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--out-dir", default="diffzoo-demo", help="where PNGs are written (default: ./diffzoo-demo)")
    p.add_argument("--quick", action="store_true", help="fewer samples and step counts")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run)
