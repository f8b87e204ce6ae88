"""Shared helpers of the benchmark commands: where results go (tables and PNGs: :mod:`diffzoo.io`)."""

from __future__ import annotations

import os
from pathlib import Path


def results_dir() -> Path:
    """``docs/results`` of the source checkout (or ``$DIFFZOO_RESULTS``)."""
    env = os.environ.get("DIFFZOO_RESULTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "docs" / "results"
