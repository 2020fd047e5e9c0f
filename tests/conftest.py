"""Shared fixtures. The tiny model is built once per session (see conftest_model)."""

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402

from tests.conftest_model import *  # noqa: F401,F403,E402  (the session-scoped tiny model)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An isolated tracemill home."""
    monkeypatch.setenv("TRACEMILL_HOME", str(tmp_path))
    return tmp_path
