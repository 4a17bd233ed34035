"""Fixtures: real InferWire servers on free ports, each serving a temporary copy of
examples/models (so its .inferwire-state.json never lands in the source tree).

``server`` is a plain server. The TLS and authentication tests start more servers
with ``serve`` flags (``--tls-cert``, ``--tls-client-ca``, ``--token-file``,
``--jwt-keys``, ...), using certificates ``openssl`` makes at test time (``pki.py``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import pytest

import inferwire
from pki import PKI, make_pki

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLE_MODELS = REPO_ROOT / "examples" / "models"
SERVER = os.environ.get("INFERWIRE_SERVER", "/tmp/inferwire-server")
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")

Address = Tuple[str, int]


@dataclass
class ServerProcess:
    """A started ``serve``: its address and process (to signal), and its log file."""

    address: Address
    process: subprocess.Popen
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def started_server(
    base: Path, *flags: str, port: int = 0, prepare: Optional[Callable[[Path], None]] = None
) -> Iterator[ServerProcess]:
    """Start ``serve`` with ``flags`` on ``port`` (0: a free one) in ``base``; yields it, then SIGTERMs it
    (or reaps it, if a test already stopped it).

    ``prepare``, if given, is called with the copied model repository before the server
    starts (to add or break models). The server's log is ``base / "server.log"``.
    """
    if not os.access(SERVER, os.X_OK):
        pytest.fail(f"no server binary at {SERVER} (set INFERWIRE_SERVER)")
    repository = base / "models"
    shutil.copytree(EXAMPLE_MODELS, repository)
    if prepare is not None:
        prepare(repository)
    log_path = base / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [SERVER, "serve", "--repository", str(repository), "--host", "127.0.0.1", "--port", str(port),
             "--http-port", "0", *flags],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        listening = None
        deadline = time.monotonic() + 30
        while listening is None:
            match = LISTENING.search(log_path.read_text(errors="replace"))
            if match:
                listening = int(match.group(1))
            elif process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server {' '.join(flags)} did not start:\n{log_path.read_text(errors='replace')}")
            else:
                time.sleep(0.05)
        yield ServerProcess(("127.0.0.1", listening), process, log_path)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # in case a test stopped it
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_server(
    base: Path, *flags: str, port: int = 0, prepare: Optional[Callable[[Path], None]] = None
) -> Iterator[Address]:
    """Start ``serve`` with ``flags`` on ``port`` (0: a free one) in ``base``; yields ``(host, port)``, then SIGTERMs it.

    ``prepare``, if given, is called with the copied model repository before the server
    starts (to add or break models). The server's log is ``base / "server.log"``.
    """
    with started_server(base, *flags, port=port, prepare=prepare) as server:
        yield server.address


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """A plain server (no TLS, no authentication)."""
    with running_server(tmp_path_factory.mktemp("inferwire")) as address:
        yield address


@pytest.fixture
def client(server):
    with inferwire.Client(*server, timeout=30) as c:
        yield c


# -- TLS and authentication ---------------------------------------------------------


@pytest.fixture(scope="session")
def launch(tmp_path_factory) -> Iterator[Callable[..., Address]]:
    """Starts a server with the given flags (stopped at the end of the session)."""
    with contextlib.ExitStack() as stack:
        yield lambda *flags: stack.enter_context(running_server(tmp_path_factory.mktemp("inferwire"), *flags))


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> PKI:
    if shutil.which("openssl") is None:
        pytest.fail("the TLS tests need the openssl command")
    return make_pki(tmp_path_factory.mktemp("pki"))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Credentials:
    """The token file and JWT key set the authenticating servers are started with."""

    tokens: Dict[str, str]  # bearer token by principal name
    token_file: Path
    jwks: Path
    jwt_secret: bytes
    issuer: str = "inferwire-tests"
    audience: str = "inferwire"

    def flags(self) -> Tuple[str, ...]:
        return (
            "--token-file", str(self.token_file), "--jwt-keys", str(self.jwks),
            "--jwt-issuer", self.issuer, "--jwt-audience", self.audience,
        )

    def jwt(self, *, kid: str = "k1", secret: bytes = b"", **claims: Any) -> str:
        """An HS256 JWT signed with the servers' key (or ``secret``); ``iss``/``aud`` default to theirs."""
        claims = {"iss": self.issuer, "aud": self.audience, **claims}
        header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
        body = b64url(json.dumps(claims).encode())
        signature = hmac.new(secret or self.jwt_secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
        return f"{header}.{body}.{b64url(signature)}"


@pytest.fixture(scope="session")
def credentials(tmp_path_factory) -> Credentials:
    directory = tmp_path_factory.mktemp("credentials")
    tokens = {name: f"iw-{name}-{secrets.token_urlsafe(16)}" for name in ("deployer", "app", "watcher")}

    def digest(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8")).hexdigest()

    token_file = directory / "tokens"
    token_file.write_text(
        "# principals for the client tests\n"
        f"token {digest(tokens['deployer'])} deployer infer,manage,admin\n"
        f"token {digest(tokens['app'])} app infer add_sub,ident*   # two models: a name and a prefix\n"
        f"token {digest(tokens['watcher'])} watcher manage\n"
        "certificate ci-runner infer,manage identity,add_sub\n"
    )
    secret = secrets.token_bytes(32)
    jwks = directory / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{"kty": "oct", "kid": "k1", "k": b64url(secret), "alg": "HS256"}]}))
    return Credentials(tokens=tokens, token_file=token_file, jwks=jwks, jwt_secret=secret)


@pytest.fixture(scope="session")
def tls_server(launch, pki) -> Address:
    """TLS with the certificate for 127.0.0.1/localhost; no authentication."""
    return launch("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key))


@pytest.fixture(scope="session")
def auth_server(launch, pki, credentials) -> Address:
    """TLS, and every connection must authenticate (token file and JWTs)."""
    return launch("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key), *credentials.flags())


@pytest.fixture(scope="session")
def plain_auth_server(launch, credentials) -> Address:
    """No TLS; every connection must authenticate."""
    return launch("--token-file", str(credentials.token_file))


@pytest.fixture(scope="session")
def mtls_server(launch, pki, credentials) -> Address:
    """Mutual TLS (client certificates from ``pki.ca``) and authentication; the token file lists ``ci-runner``."""
    return launch(
        "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key), "--tls-client-ca", str(pki.ca),
        "--token-file", str(credentials.token_file),
    )
