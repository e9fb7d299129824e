"""Pages are tested in Debian's Chromium driven by Playwright for Python (Playwright's own browser
download cannot work here). .ci/run installs the package when it is missing; on a developer's
machine without it the browser tests are skipped and the run says so in a banner at its end
(tests/conftest.py), never silently; under CI a missing Chromium fails them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("LIFECYCLE_CHROMIUM", "/usr/bin/chromium"))
MISSING = (f"Chromium is missing ({CHROMIUM}): the console's browser tests did not run. Install Debian's "
           "package (`apt-get install chromium`; .ci/run does it), or name another binary in LIFECYCLE_CHROMIUM")


def available() -> bool:
    return CHROMIUM.exists()


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium; every request it makes is the test's to check."""
    if not available():
        if os.environ.get("CI"):
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()
