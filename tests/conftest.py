"""Test session set-up: a private Prefect home, no analytics, one Prefect test server per session."""
import os
import tempfile
from pathlib import Path

import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="scratchlm-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_TO_API_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CRAWL = REPO / "data" / "sample-crawl"


@pytest.fixture(scope="session")
def prefect_server():
    """One real Prefect server (SQLite, temporary) for every test that runs flows."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def sample_warcs() -> list[Path]:
    warcs = sorted(SAMPLE_CRAWL.glob("*.warc.gz"))
    assert warcs, f"the committed sample crawl is missing from {SAMPLE_CRAWL}"
    return warcs
