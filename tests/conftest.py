"""Suite-wide guard: running the tests leaves every file of the checkout byte-identical (tests write only to
tmp_path and the per-user folders they point XDG_DATA_HOME at)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Property tests draw the same examples on every run (a CI run must not fail on a draw the last one did not
# make); FTCALC_HYPOTHESIS_RANDOM=1 draws fresh ones to hunt for new cases.
try:
    from hypothesis import settings

    settings.register_profile("ftcalc", derandomize=not os.environ.get("FTCALC_HYPOTHESIS_RANDOM"))
    settings.load_profile("ftcalc")
except ImportError:  # hypothesis is a test extra
    pass


def _tracked() -> dict[str, str]:
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True,
                               timeout=60).stdout.decode().split("\0")
    except (OSError, subprocess.SubprocessError):
        return {}  # not a git checkout (an sdist): nothing to compare
    return {n: hashlib.sha256((REPO / n).read_bytes()).hexdigest() for n in names if n and (REPO / n).is_file()}


@pytest.fixture(scope="session", autouse=True)
def checkout_unchanged() -> Iterator[None]:
    before = _tracked()
    yield
    after = _tracked()
    changed = sorted(k for k in before if before[k] != after.get(k))
    assert not changed, f"the tests changed files of the checkout: {changed[:10]}"
