"""Fixtures of the engine tests against the S3 server: the fault-injecting proxy before it."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fault_proxy import FaultProxy  # noqa: E402


@pytest.fixture
def proxy(s3_server):
    """A FaultProxy in front of the S3 server (rules added per test), stopped after the test."""
    proxy = FaultProxy(s3_server)
    yield proxy
    proxy.stop()
