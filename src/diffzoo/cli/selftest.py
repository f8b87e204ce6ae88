"""``diffzoo selftest``: run diffzoo's property-based fuzz tests (every registry entry, bad inputs, invariants).

``diffzoo selftest --fuzz quick`` runs the CI profile (a few derandomized examples per test, about a
minute); ``--fuzz long`` the release profile (hundreds of random examples per test). The tests live in
the repository's ``tests/`` folder (``tests/test_fuzz_*.py``); they need the dev dependencies ``pytest``
and ``hypothesis``. Prints a table of the generated cases per registry and exits 1 when a test fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from diffzoo.io import format_table

#: ``--fuzz`` level -> hypothesis profile registered in ``tests/conftest.py``.
PROFILES = {"quick": "ci", "long": "long"}
#: The fuzz test modules, relative to the tests folder.
FUZZ_TESTS = ("test_fuzz_registries.py", "test_fuzz_invariants.py")


def default_tests_dir() -> Path:
    """``tests/`` of the source checkout this diffzoo was imported from (``src/diffzoo`` -> ``tests``)."""
    return Path(__file__).resolve().parents[3] / "tests"


def _fuzz_files(tests: Path) -> list[str]:
    files = [tests / f for f in FUZZ_TESTS]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ValueError(
            f"--tests: {', '.join(missing)} not found; pass --tests DIR (the tests/ folder of a diffzoo "
            "source checkout: the fuzz tests are not part of an installed package)"
        )
    return [str(f) for f in files]


def _dev_dependencies():
    try:
        import hypothesis  # noqa: F401  (only checked: the tests import it)
        import pytest
    except ImportError as e:
        raise ValueError(
            f"--fuzz: the fuzz tests need the dev dependencies pytest and hypothesis ({e.name} is missing); "
            "install them with `pip install -e .[dev]` or `pip install pytest hypothesis`"
        ) from None
    return pytest


def summary(stats: dict) -> str:
    """The generated cases per registry (from the tests' ``fuzz_count`` fixture) as a markdown table."""
    rows = []
    for registry, kinds in sorted(stats.get("counts", {}).items()):
        row = {"registry": registry}
        row.update({k: kinds.get(k, 0) for k in ("valid", "invalid", "invariant")})
        row["total"] = sum(kinds.values())
        rows.append(row)
    return format_table(rows)


def _run(args: argparse.Namespace) -> int:
    files = _fuzz_files(Path(args.tests))
    pytest = _dev_dependencies()
    argv = [*files, "-q", "-p", "no:cacheprovider", "-p", "no:warnings"]
    if args.k:
        argv += ["-k", args.k]
    if args.seed is not None:
        argv.append(f"--hypothesis-seed={args.seed}")
    with tempfile.TemporaryDirectory() as tmp:
        stats_path = Path(tmp) / "fuzz_stats.json"
        saved = {k: os.environ.get(k) for k in ("DIFFZOO_FUZZ_PROFILE", "DIFFZOO_FUZZ_STATS")}
        os.environ["DIFFZOO_FUZZ_PROFILE"] = PROFILES[args.fuzz]
        os.environ["DIFFZOO_FUZZ_STATS"] = str(stats_path)
        try:
            code = int(pytest.main(argv))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    if stats:
        print(f"\nGenerated cases (hypothesis profile {stats.get('profile')!r}):\n{summary(stats)}")
    if args.stats and stats:
        Path(args.stats).write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    sys.stdout.flush()
    return 0 if code == 0 else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "selftest",
        help="run the property-based fuzz tests of every registry (needs pytest and hypothesis)",
        description=__doc__.splitlines()[0],
    )
    p.add_argument(
        "--fuzz",
        choices=sorted(PROFILES),
        default="quick",
        help="quick: the CI profile (about a minute); long: the release profile (hundreds of examples per test)",
    )
    p.add_argument(
        "--tests",
        default=str(default_tests_dir()),
        help="the tests/ folder of a diffzoo source checkout (default: next to this source tree)",
    )
    p.add_argument("-k", default=None, help="only tests matching this pytest -k expression (e.g. 'sampler and ddim')")
    p.add_argument("--seed", type=int, default=None, help="hypothesis seed of the long profile (reproduce a run)")
    p.add_argument("--stats", default=None, help="also write the case counts to this JSON file")
    p.set_defaults(func=_run)
