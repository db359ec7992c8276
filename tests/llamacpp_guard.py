"""Tests that need llama.cpp ask the probe first (instructkit/models/engine_probe.py): a build that faults
on this machine makes them skip with the probe's reason instead of taking the test run down."""

from __future__ import annotations

import pytest


def require_llamacpp() -> None:
    """Skip (a test, a fixture or a whole module) where llama.cpp cannot run on this machine."""
    pytest.importorskip("llama_cpp")
    from instructkit.models.engine_probe import llamacpp_verdict

    verdict = llamacpp_verdict()
    if not verdict.ok:
        pytest.skip(f"llama.cpp cannot run on this machine: {verdict.reason}", allow_module_level=True)
