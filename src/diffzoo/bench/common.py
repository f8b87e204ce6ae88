"""Shared helpers of the benchmark commands: table formatting and writing results to docs/results/."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, floatfmt: str = ".4g") -> str:
    """A GitHub-markdown table of ``rows`` (dicts); floats formatted with ``floatfmt``."""
    if not rows:
        return "(no rows)"
    cols = list(columns or rows[0].keys())

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return "" if v is None else str(v).replace("|", "\\|")  # a bare | would split the cell

    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    names = [fmt(c) for c in cols]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(names)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line(names), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    return "\n".join(out)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file and rename (never leaves a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def results_dir() -> Path:
    """``docs/results`` of the source checkout (or ``$DIFFZOO_RESULTS``)."""
    env = os.environ.get("DIFFZOO_RESULTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "docs" / "results"
