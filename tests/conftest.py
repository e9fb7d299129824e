import os
import re
from pathlib import Path

import pytest

# Tests never read the developer's own configuration by accident.
for _name in [n for n in os.environ if n.startswith("LIFECYCLE_") and n not in (
    "LIFECYCLE_KAFKA_BOOTSTRAP", "LIFECYCLE_POSTGRES_DSN", "LIFECYCLE_REDIS_URL", "LIFECYCLE_VENV")]:
    del os.environ[_name]

from tests.fix_servers import connectors, servers, settings, worker  # noqa: E402,F401
from tests.unit.samples import PII  # noqa: E402

# The demo's subjects (lifecycle/demo.py): addresses, names and phone numbers it makes up.
DEMO_PII = {"email": re.compile(rb"user\d{5}@example\.com"), "name": re.compile(rb"(Given|Family)\d+\b"),
            "phone": re.compile(rb"\+3360000\d{4}")}


@pytest.fixture(scope="session", autouse=True)
def personal_data_sweep(tmp_path_factory: pytest.TempPathFactory):
    """After the whole run: no log file written by any process a test started (workers, brokers,
    databases, `up`, `demo`) holds the seeded personal data. Fails the run and names the file."""
    yield
    base = Path(tmp_path_factory.getbasetemp())
    hits = []
    for path in base.rglob("*.log"):
        data = path.read_bytes()
        hits.extend(f"{path.relative_to(base)}: {key}" for key, value in PII.items() if value.encode() in data)
        hits.extend(f"{path.relative_to(base)}: demo {name}" for name, pattern in DEMO_PII.items()
                    if pattern.search(data))
    assert hits == [], f"seeded personal data in logs: {hits}"


_MARK_BY_FOLDER = {"unit": "unit", "integration": "integration", "e2e": "e2e", "faults": "faults",
                   "security": "security"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test is marked by its folder, so `-m unit` (or `-m "not e2e"`) selects by kind."""
    root = Path(__file__).parent
    for item in items:
        folder = Path(item.path).relative_to(root).parts[0]
        if folder in _MARK_BY_FOLDER:
            item.add_marker(getattr(pytest.mark, _MARK_BY_FOLDER[folder]))


def pytest_terminal_summary(terminalreporter: "pytest.TerminalReporter", exitstatus: int,
                            config: pytest.Config) -> None:
    """A machine without Chromium is told loudly: its browser tests were skipped (tests/browser.py)."""
    from tests.browser import MISSING, available

    if not available():
        terminalreporter.write_sep("!", "BROWSER TESTS DID NOT RUN", red=True, bold=True)
        terminalreporter.write_line(MISSING, red=True, bold=True)
