"""Shared helpers of the benchmark commands: where results go (tables and PNGs: :mod:`diffzoo.io`)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def results_dir() -> Path:
    """``docs/results`` of the source checkout (or ``$DIFFZOO_RESULTS``)."""
    env = os.environ.get("DIFFZOO_RESULTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "docs" / "results"


def wanted_sections(spec: str | None, ids: Iterable[str]) -> tuple[str, ...]:
    """The section ids chosen by a bench's ``--sections`` (comma-separated; ``None``: all), in run order;
    ``ValueError`` naming ``sections`` on an unknown id."""
    ids = tuple(ids)
    if spec is None:
        return ids
    chosen = [x.strip() for x in spec.split(",") if x.strip()]
    if not chosen or any(x not in ids for x in chosen):
        raise ValueError(f"sections: expected a comma-separated subset of {', '.join(ids)}, got {spec!r}")
    return tuple(k for k in ids if k in chosen)


def section_suffix(wanted: tuple[str, ...], ids: Iterable[str]) -> str:
    """``""`` when every section runs, else ``"_<id>-<id>..."`` (the results file of a subset)."""
    return "" if wanted == tuple(ids) else "_" + "-".join(wanted)
