"""Shared fixtures: tiny pipelines (built once per session) and an isolated profile folder."""

import os
import socket

import pytest

from genaccel.generation.load import load_pipeline


@pytest.fixture(autouse=True)
def _profiles(tmp_path_factory, monkeypatch):
    # Calibrated profiles from a user's cache must never change test results.
    monkeypatch.setenv("GENACCEL_PROFILE_DIR", str(tmp_path_factory.getbasetemp() / "profiles"))


_PIPES = {}


@pytest.fixture
def tiny():
    """tiny("wan") -> a cached tiny pipeline with nothing applied."""
    from genaccel.engine.acceleration import remove
    from genaccel.memory.offload import place

    def get(family: str):
        name = f"tiny-{family}"
        if name not in _PIPES:
            _PIPES[name] = load_pipeline(name, device="cpu")
        pipe = _PIPES[name]
        remove(pipe)
        place(pipe, "none", False)  # no offloading or tiling left by an earlier test
        return pipe

    yield get
    for pipe in _PIPES.values():
        remove(pipe)


@pytest.fixture(scope="session")
def embedded():
    """The embedded trained model (genaccel's default), loaded once."""
    from genaccel.models.facts import EMBEDDED

    return load_pipeline(EMBEDDED, device="cpu")


os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
