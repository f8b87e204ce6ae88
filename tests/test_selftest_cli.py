"""``diffzoo selftest --fuzz quick|long``: runs the fuzz tests with the chosen hypothesis profile and prints
the generated cases per registry; errors name the option."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from diffzoo.cli import main, selftest

TESTS = Path(__file__).resolve().parent


def test_selftest_finds_this_checkouts_tests():
    assert selftest.default_tests_dir() == TESTS
    assert all((TESTS / f).is_file() for f in selftest.FUZZ_TESTS)
    assert set(selftest.PROFILES) == {"quick", "long"}


def test_selftest_errors_name_the_option(tmp_path, capsys, monkeypatch):
    assert main(["selftest", "--tests", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffzoo selftest: error: --tests:") and "\n" not in err
    monkeypatch.setitem(sys.modules, "hypothesis", None)  # as if the dev dependency were not installed
    assert main(["selftest", "--tests", str(TESTS)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffzoo selftest: error: --fuzz:") and "hypothesis" in err
    with pytest.raises(SystemExit):
        main(["selftest", "--fuzz", "forever"])


def test_selftest_runs_the_fuzz_tests_and_counts_cases(tmp_path):
    """A real run in a fresh interpreter (the quick profile, a few tests selected with -k)."""
    stats = tmp_path / "stats.json"
    run = "import sys; from diffzoo.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", run, "selftest", "--fuzz", "quick", "--stats", str(stats)]
    cmd += ["-k", "test_every_registry_is_fuzzed or test_schedule_factory or test_mask_schedules_invert"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Generated cases (hypothesis profile 'ci')" in out.stdout and "| schedules " in out.stdout
    counts = json.loads(stats.read_text())
    assert counts["profile"] == "ci"
    assert counts["counts"]["schedules"]["valid"] + counts["counts"]["schedules"]["invalid"] >= 8
    assert counts["counts"]["mask_schedules"]["invariant"] >= 2
