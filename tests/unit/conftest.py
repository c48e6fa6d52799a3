"""Fixtures of the unit tests that need a real pod-spawn (test_exec_spawn, test_exec_armed)."""

from __future__ import annotations

import pytest

from podnode.exec.sandbox import spawn_helper


@pytest.fixture(scope="module")
def helper() -> str:
    """The path of this machine's pod-spawn (built on first use); the module's tests skip without a compiler."""
    path, why = spawn_helper()
    if path is None:
        pytest.skip(f"no pod-spawn here: {why}")
    return path
