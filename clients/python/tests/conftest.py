"""Fixtures: a real InferWire server on a free port, serving a temporary copy of
examples/models (so its .inferwire-state.json never lands in the source tree)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

import inferwire

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLE_MODELS = REPO_ROOT / "examples" / "models"
SERVER = os.environ.get("INFERWIRE_SERVER", "/tmp/inferwire-server")
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """Start the server; yields ``(host, port)`` and stops it with SIGTERM afterwards."""
    if not os.access(SERVER, os.X_OK):
        pytest.fail(f"no server binary at {SERVER} (set INFERWIRE_SERVER)")
    base = tmp_path_factory.mktemp("inferwire")
    repository = base / "models"
    shutil.copytree(EXAMPLE_MODELS, repository)
    log_path = base / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [SERVER, "serve", "--repository", str(repository), "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        port = None
        deadline = time.monotonic() + 30
        while port is None:
            match = LISTENING.search(log_path.read_text(errors="replace"))
            if match:
                port = int(match.group(1))
            elif process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not start:\n{log_path.read_text(errors='replace')}")
            else:
                time.sleep(0.05)
        yield "127.0.0.1", port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def client(server):
    with inferwire.Client(*server, timeout=30) as c:
        yield c
