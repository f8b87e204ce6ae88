"""``diffzoo studio``: a local web app over the library (edit, restore, sample, audit side by side).

Serves on ``--host`` (default ``127.0.0.1``: this machine only) and ``--port``; needs no network and
sends no telemetry (the page is three static files in the package). ``--model-dir`` edits with a
diffusers Stable Diffusion pipeline folder already on disk instead of the zoo's ``tinysd``. Needs the
``studio`` extra (``pip install 'diffzoo[studio]'``: fastapi, uvicorn).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging

from diffzoo.studio import Studio, serve

log = logging.getLogger(__name__)


def _run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise ValueError(f"port: expected 1..65535, got {args.port}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"threads: expected a positive integer, got {args.threads}")
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise OSError("studio: fastapi and uvicorn are missing; install the extra: pip install 'diffzoo[studio]'")
    studio = Studio(args.model_dir, args.threads)
    print(f"diffzoo studio on http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True)
    serve(studio, args.host, args.port)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "studio",
        help="serve the local web app (edit, restore, sample, audit)",
        description="a local web app over diffzoo: edit, restore, sample and audit side by side (no network needed)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to serve on (default: this machine only; the studio has no login, so keep it local)",
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--model-dir", default=None, help="a diffusers Stable Diffusion pipeline folder for the Edit panel")
    p.add_argument("--threads", type=int, default=None, help="torch threads of the runs (default: torch's)")
    p.set_defaults(func=_run)
