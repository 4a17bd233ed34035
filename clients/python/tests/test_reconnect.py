"""Reconnection (PROTOCOL.md section 5, "Reconnecting"), for both clients.

Against real servers started with ``--idle-timeout 0.3``, which send GOAWAY
``UNAVAILABLE`` ("connection idle ...") to a connection without requests and close it
0.3 to 0.45 s later; and against a server stopped and started again on the same port.
The cases a real server produces only by chance (a REQUEST read after its GOAWAY, a
connection ending with a call in flight, a call queued behind the concurrency limit when
GOAWAY comes) are played by a scripted server (``scripted.py``).

Nothing here sleeps for a fixed time: tests wait for conditions, polling with a bound.
``client.connections_opened`` counts the connections a client opened (1 for the first).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable

import numpy as np
import pytest

import inferwire
from conftest import running_server
from inferwire import _api as api
from inferwire import _wire
from inferwire._proto import frames_pb2
from scripted import Peer, ScriptedServer

IDLE = ("--idle-timeout", "0.3")


def add_sub_inputs(a, b):
    return {"INPUT0": np.asarray(a, np.float32), "INPUT1": np.asarray(b, np.float32)}


def assert_add_sub_works(result):
    np.testing.assert_array_equal(result["OUTPUT0"], [[11, 22, 33, 44]])
    np.testing.assert_array_equal(result["OUTPUT1"], [[-9, -18, -27, -36]])


X = add_sub_inputs([[1, 2, 3, 4]], [[10, 20, 30, 40]])


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


async def async_wait_until(condition: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def wait_for_idle_close(client: inferwire.Client, *, closed: bool = True) -> None:
    """Until the server has ended the client's idle connection: its reader thread read the end of the stream.

    With ``closed=False``, only until the client read the server's idle GOAWAY (the connection may
    still be open): that too makes the next call reconnect.
    """
    connection = client._conn
    if closed:
        wait_until(lambda: not connection.thread.is_alive(), "the server to close the idle connection")
    else:
        wait_until(lambda: not client.connected, "the server's idle GOAWAY")
    assert not client.connected
    goaway = connection.goaway
    assert goaway is not None and goaway.code == inferwire.StatusCode.UNAVAILABLE, goaway
    assert "idle" in goaway.message


async def async_wait_for_idle_close(client: inferwire.AsyncClient, *, closed: bool = True) -> None:
    connection = client._conn
    assert connection is not None
    if closed:
        await async_wait_until(lambda: connection.finished, "the server to close the idle connection")
    else:
        await async_wait_until(lambda: not client.connected, "the server's idle GOAWAY")
    assert not client.connected
    goaway = connection.goaway
    assert goaway is not None and goaway.code == inferwire.StatusCode.UNAVAILABLE, goaway
    assert "idle" in goaway.message


@pytest.fixture(scope="module")
def idle_server(launch):
    return launch(*IDLE)


@pytest.fixture(scope="module")
def idle_auth_server(launch, credentials):
    """Plaintext; every connection must authenticate."""
    return launch(*IDLE, "--token-file", str(credentials.token_file))


@pytest.fixture(scope="module")
def idle_tls_auth_server(launch, pki, credentials):
    """TLS, and every connection must authenticate."""
    return launch(*IDLE, "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key), *credentials.flags())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- after the server closed an idle connection -------------------------------------------------


def test_next_call_reconnects_after_idle_close(idle_server):
    with inferwire.Client(*idle_server, timeout=30) as client:
        assert_add_sub_works(client.infer("add_sub", X))
        opened, first = client.connections_opened, client._conn
        wait_for_idle_close(client)
        assert client.connections_opened == opened  # noticing the close opens nothing
        assert_add_sub_works(client.infer("add_sub", X))
        assert client.connected and client.connections_opened == opened + 1 and client._conn is not first
        assert client.hello.server_name == "inferwire"


def test_reconnect_authenticates_again(idle_auth_server, credentials):
    with inferwire.Client(*idle_auth_server, token=credentials.tokens["app"], timeout=30) as client:
        assert client.hello.authentication_required
        assert client.principal is not None and client.principal.name == "app"
        assert_add_sub_works(client.infer("add_sub", X))
        opened, first = client.connections_opened, client._conn
        wait_for_idle_close(client)
        # This server answers requests of an unauthenticated connection UNAUTHENTICATED: the call working
        # shows that the new connection presented the token again.
        assert_add_sub_works(client.infer("add_sub", X))
        assert client.connections_opened == opened + 1
        assert client._conn is not first and client._conn.principal is not first.principal
        assert client.principal is not None and client.principal.name == "app"

        # authenticate() after GOAWAY opens the new connection with the new credentials, which later
        # connections present too.
        wait_for_idle_close(client, closed=False)
        assert client.authenticate(credentials.tokens["deployer"]).name == "deployer"
        assert client.connections_opened == opened + 2
        wait_for_idle_close(client, closed=False)
        assert "mlp" in {m.name for m in client.list_models()}  # the manage role: deployer's
        assert client.principal is not None and client.principal.name == "deployer"
        assert client.connections_opened == opened + 3


def test_reconnect_over_tls(idle_tls_auth_server, pki, credentials):
    token = credentials.tokens["app"]
    with inferwire.Client(*idle_tls_auth_server, tls_ca=pki.ca, token=token, timeout=30) as client:
        assert client.tls_version in ("TLSv1.2", "TLSv1.3")
        assert_add_sub_works(client.infer("add_sub", X))
        opened, first_tls = client.connections_opened, client._tls
        wait_for_idle_close(client)
        assert_add_sub_works(client.infer("add_sub", X))
        assert client.connections_opened == opened + 1
        assert client._tls is not None and client._tls is not first_tls
        assert client._tls.tls.selected_alpn_protocol() == "inferwire/1"
        assert client.tls_version in ("TLSv1.2", "TLSv1.3")
        assert client.principal is not None and client.principal.name == "app"


def test_async_next_call_reconnects_after_idle_close(idle_server, idle_tls_auth_server, pki, credentials):
    async def main():
        async with inferwire.AsyncClient(*idle_server, timeout=30) as client:
            assert_add_sub_works(await client.infer("add_sub", X))
            opened, first = client.connections_opened, client._conn
            await async_wait_for_idle_close(client)
            assert client.connections_opened == opened
            assert_add_sub_works(await client.infer("add_sub", X))
            assert client.connected and client.connections_opened == opened + 1 and client._conn is not first

        token = credentials.tokens["app"]
        async with inferwire.AsyncClient(*idle_tls_auth_server, tls_ca=pki.ca, token=token, timeout=30) as client:
            assert_add_sub_works(await client.infer("add_sub", X))
            opened = client.connections_opened
            await async_wait_for_idle_close(client)
            assert_add_sub_works(await client.infer("add_sub", X))
            assert client.connections_opened == opened + 1
            assert client.tls_version in ("TLSv1.2", "TLSv1.3")
            assert client.principal is not None and client.principal.name == "app"
            await async_wait_for_idle_close(client, closed=False)
            assert (await client.authenticate(credentials.tokens["deployer"])).name == "deployer"
            await async_wait_for_idle_close(client, closed=False)
            assert len(await client.list_models()) >= 5  # reconnected as deployer (manage role)
            assert client.connections_opened == opened + 3

    asyncio.run(main())


def test_request_read_after_the_idle_goaway_is_refused_as_not_executed(idle_server):
    # A call sent just as the server's idle GOAWAY is on its way: the server reads it after its GOAWAY
    # and answers ERROR UNAVAILABLE ("connection is draining"), which the client takes as "never ran"
    # (wire.NotExecuted), the signal for sending the call again on a new connection (the retry itself is
    # shown with the scripted server below). To send a request there on purpose, the connection is made
    # to overlook the GOAWAY it read, and the call goes to it directly. This relies on the server reading
    # (and refusing) REQUESTs for a while after its idle GOAWAY -- about a second -- as it does.
    call = api.server_live()
    payload = call.request.SerializeToString()
    with inferwire.Client(*idle_server, timeout=30) as client:
        assert client.server_live()
        opened, first = client.connections_opened, client._conn
        wait_until(lambda: first.goaway is not None, "the idle GOAWAY")
        with first._lock:
            overlooked, first.closed = first.closed, None
        with pytest.raises(_wire.NotExecuted) as info:
            first.invoke(call, payload, deadline=None, timeout=None, compress=False)
        assert info.value.error.code == inferwire.StatusCode.UNAVAILABLE and "draining" in info.value.error.message
        with first._lock:
            first.closed = overlooked
        assert client.server_live()
        assert client.connections_opened == opened + 1

    async def main():
        async with inferwire.AsyncClient(*idle_server, timeout=30) as client:
            assert await client.server_live()
            first = client._conn
            await async_wait_until(lambda: first.goaway is not None, "the idle GOAWAY")
            overlooked, first.closed = first.closed, None
            with pytest.raises(_wire.NotExecuted) as info:
                await first.invoke(call, payload, deadline=None, timeout=None, compress=False)
            assert "draining" in info.value.error.message
            first.closed = overlooked
            assert await client.server_live()

    asyncio.run(main())


# -- many callers, one reconnection ---------------------------------------------------------------


def test_threads_share_one_reconnection(idle_server):
    threads = 32
    with inferwire.Client(*idle_server, timeout=30) as client:
        assert client.server_live()
        wait_for_idle_close(client)
        opened = client.connections_opened
        start = threading.Barrier(threads)

        def call(i: int) -> None:
            start.wait(timeout=10)
            a = np.full((1, 4), i, np.float32)
            result = client.infer("add_sub", add_sub_inputs(a, np.ones_like(a)))
            np.testing.assert_array_equal(result["OUTPUT0"], a + 1)

        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(call, range(threads)))
        assert client.connections_opened == opened + 1
        assert not client._pending


def test_tasks_share_one_reconnection(idle_server):
    async def main():
        async with inferwire.AsyncClient(*idle_server, timeout=30) as client:
            assert await client.server_live()
            await async_wait_for_idle_close(client)
            opened = client.connections_opened
            results = await asyncio.gather(
                *(client.infer("add_sub", add_sub_inputs([[i] * 4], [[1] * 4])) for i in range(200))
            )
            assert [float(r["OUTPUT0"][0, 0]) for r in results] == [i + 1.0 for i in range(200)]
            assert client.connections_opened == opened + 1
            assert not client._pending

    asyncio.run(main())


# -- server stopped, then started again on the same port --------------------------------------------


def test_server_restart_on_same_port(tmp_path):
    port = free_port()
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with running_server(tmp_path / "first", port=port) as address:
        assert address == ("127.0.0.1", port)
        client = inferwire.Client(*address, timeout=30, connect_timeout=5)
        assert client.server_live()
    try:
        # The stopping server sent GOAWAY and closed; the client saw it without sending anything.
        wait_until(lambda: not client._conn.thread.is_alive(), "the stopped server's connection to end")
        assert not client.connected
        for _ in range(2):  # every call tries again, and says why it cannot
            with pytest.raises(inferwire.UnavailableError) as info:
                client.server_live()
            message = info.value.message
            assert f"could not reconnect to 127.0.0.1:{port}" in message and "refused" in message.lower(), message
        assert client.connections_opened == 1

        # Callers at the same time share the failed attempt, each raising its own copy of the error.
        with ThreadPoolExecutor(max_workers=8) as pool:
            failures = list(pool.map(lambda _: pytest.raises(inferwire.UnavailableError, client.server_live), range(8)))
        assert len({id(failure.value) for failure in failures}) == 8
        assert all("could not reconnect" in failure.value.message for failure in failures)

        with running_server(tmp_path / "second", port=port):
            assert client.server_live()
            assert client.connected and client.connections_opened == 2
            assert_add_sub_works(client.infer("add_sub", X))
    finally:
        client.close()


def test_async_server_restart_on_same_port(tmp_path):
    port = free_port()
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()

    async def main():
        with running_server(tmp_path / "first", port=port) as address:
            client = await inferwire.AsyncClient.connect(*address, timeout=30, connect_timeout=5)
            assert await client.server_live()
        try:
            await async_wait_until(lambda: client._conn.finished, "the stopped server's connection to end")
            assert not client.connected
            with pytest.raises(inferwire.UnavailableError) as info:
                await client.server_live()
            assert f"could not reconnect to 127.0.0.1:{port}" in info.value.message
            assert "refused" in info.value.message.lower()
            failures = await asyncio.gather(*(client.server_live() for _ in range(8)), return_exceptions=True)
            assert all(isinstance(failure, inferwire.UnavailableError) for failure in failures), failures
            assert client.connections_opened == 1
            with running_server(tmp_path / "second", port=port):
                assert await client.server_live()
                assert client.connected and client.connections_opened == 2
        finally:
            await client.close()

    asyncio.run(main())


# -- close() ends reconnection ---------------------------------------------------------------------


def test_close_stops_reconnection(idle_server):
    client = inferwire.Client(*idle_server, timeout=30)
    assert client.server_live()
    wait_for_idle_close(client)
    client.close()
    assert not client.connected
    for _ in range(2):
        with pytest.raises(inferwire.UnavailableError, match="client closed"):
            client.server_live()
    with pytest.raises(inferwire.UnavailableError, match="client closed"):
        client.authenticate("any-token")
    assert client.connections_opened == 1

    async def main():
        client = await inferwire.AsyncClient.connect(*idle_server, timeout=30)
        assert await client.server_live()
        await client.close()
        with pytest.raises(inferwire.UnavailableError, match="client closed"):
            await client.server_live()
        with pytest.raises(inferwire.UnavailableError, match="client closed"):
            await client.open()
        assert client.connections_opened == 1 and not client.connected

    asyncio.run(main())


def test_async_client_not_opened_does_not_connect(idle_server):
    async def main():
        client = inferwire.AsyncClient(*idle_server)
        with pytest.raises(inferwire.UnavailableError, match="not connected"):
            await client.server_live()
        assert client.connections_opened == 0

    asyncio.run(main())


# -- which calls are retried (scripted server) -------------------------------------------------------

LIVE = int(frames_pb2.SERVER_LIVE)


def refuse_after_goaway(peer: Peer) -> None:
    """What a server does with a REQUEST it reads after its GOAWAY."""
    method, request_id = peer.read_request()
    peer.goaway("server shutting down")
    peer.error(method, request_id, "server is shutting down: request not executed")


def run_both(server: ScriptedServer, blocking: Callable[[inferwire.Client], None],
             asynchronous: Callable[[inferwire.AsyncClient], Awaitable[None]]) -> None:
    """``blocking`` with a Client, then ``asynchronous`` with an AsyncClient, each on a fresh connection count."""
    with inferwire.Client(*server.address, timeout=30) as client:
        blocking(client)

    async def main():
        async with inferwire.AsyncClient(*server.address, timeout=30) as client:
            await asynchronous(client)

    asyncio.run(main())


def test_unavailable_after_goaway_is_retried_once_on_a_new_connection():
    def script(number: int, peer: Peer) -> None:
        peer.handshake()
        if number % 2 == 0:
            refuse_after_goaway(peer)
        else:
            peer.serve_live()

    server = ScriptedServer(script)
    try:
        def blocking(client):
            assert client.server_live()
            assert client.connections_opened == 2

        async def asynchronous(client):
            assert await client.server_live()
            assert client.connections_opened == 2

        run_both(server, blocking, asynchronous)
    finally:
        server.close()
    # Each client: its request refused on its first connection, sent again on its second.
    assert server.requests == [(0, LIVE), (1, LIVE), (2, LIVE), (3, LIVE)]


def test_a_call_is_retried_only_once():
    def script(number: int, peer: Peer) -> None:
        peer.handshake()
        if number < 2:
            refuse_after_goaway(peer)
        else:
            peer.serve_live()

    server = ScriptedServer(script)
    try:
        with inferwire.Client(*server.address, timeout=30) as client:
            with pytest.raises(inferwire.UnavailableError, match="request not executed"):
                client.server_live()
            assert client.connections_opened == 2
            assert client.server_live()  # the next call: a new connection again
            assert client.connections_opened == 3
    finally:
        server.close()
    assert server.requests == [(0, LIVE), (1, LIVE), (2, LIVE)]


def test_async_a_call_is_retried_only_once():
    def script(number: int, peer: Peer) -> None:
        peer.handshake()
        if number < 2:
            refuse_after_goaway(peer)
        else:
            peer.serve_live()

    server = ScriptedServer(script)

    async def main():
        async with inferwire.AsyncClient(*server.address, timeout=30) as client:
            with pytest.raises(inferwire.UnavailableError, match="request not executed"):
                await client.server_live()
            assert client.connections_opened == 2
            assert await client.server_live()
            assert client.connections_opened == 3

    try:
        asyncio.run(main())
    finally:
        server.close()
    assert server.requests == [(0, LIVE), (1, LIVE), (2, LIVE)]


def test_unavailable_without_goaway_is_the_answer():
    # UNAVAILABLE for a request read before any GOAWAY (e.g. a model that failed to load) is an answer.
    def script(number: int, peer: Peer) -> None:
        peer.handshake()
        method, request_id = peer.read_request()
        peer.error(method, request_id, "model failed to load")
        peer.serve_live()

    server = ScriptedServer(script)
    try:
        def blocking(client):
            with pytest.raises(inferwire.UnavailableError, match="model failed to load"):
                client.server_live()
            assert client.connected
            assert client.server_live()
            assert client.connections_opened == 1

        async def asynchronous(client):
            with pytest.raises(inferwire.UnavailableError, match="model failed to load"):
                await client.server_live()
            assert client.connected
            assert await client.server_live()
            assert client.connections_opened == 1

        run_both(server, blocking, asynchronous)
    finally:
        server.close()
    assert server.requests == [(0, LIVE), (0, LIVE), (1, LIVE), (1, LIVE)]


@pytest.mark.parametrize("goaway", [False, True], ids=["closed", "goaway-then-closed"])
def test_call_in_flight_when_the_connection_ends_is_not_retried(goaway):
    def script(number: int, peer: Peer) -> None:
        peer.handshake()
        if number % 2 == 0:
            peer.read_request()
            if goaway:
                peer.goaway("going away")
            # ... and the connection ends without an answer.
        else:
            peer.serve_live()

    server = ScriptedServer(script)
    try:
        def blocking(client):
            with pytest.raises(inferwire.UnavailableError, match="may have run"):
                client.server_live()
            assert client.connections_opened == 1
            assert client.server_live()
            assert client.connections_opened == 2

        async def asynchronous(client):
            with pytest.raises(inferwire.UnavailableError, match="may have run"):
                await client.server_live()
            assert client.connections_opened == 1
            assert await client.server_live()
            assert client.connections_opened == 2

        run_both(server, blocking, asynchronous)
    finally:
        server.close()
    assert server.requests == [(0, LIVE), (1, LIVE), (2, LIVE), (3, LIVE)]


def queued_behind_the_limit_script(release: threading.Event):
    """Connection 0 allows one request in flight; once ``release`` is set it sends GOAWAY, then answers it."""
    def script(number: int, peer: Peer) -> None:
        if number % 2 == 0:
            peer.handshake(max_concurrent_requests=1)
            method, request_id = peer.read_request()
            assert release.wait(timeout=10)
            release.clear()
            peer.goaway("server shutting down")
            peer.answer_live(method, request_id)  # read before the GOAWAY: still answered
        else:
            peer.handshake()
            peer.serve_live()

    return script


def test_call_queued_behind_the_limit_goes_to_a_new_connection():
    release = threading.Event()
    server = ScriptedServer(queued_behind_the_limit_script(release))
    try:
        with inferwire.Client(*server.address, timeout=30) as client:
            first = client._conn
            with ThreadPoolExecutor(max_workers=2) as pool:
                sent = pool.submit(client.server_live)
                wait_until(lambda: len(server.requests) == 1, "the first call to reach the server")
                queued = pool.submit(client.server_live)
                # The second call waits for the connection's only request slot (threading.Semaphore internals).
                wait_until(lambda: len(first._slots._cond._waiters) == 1, "the second call to queue")
                release.set()
                assert sent.result(timeout=10) and queued.result(timeout=10)
            assert client.connections_opened == 2
    finally:
        server.close()
    assert server.requests == [(0, LIVE), (1, LIVE)]


def test_async_call_queued_behind_the_limit_goes_to_a_new_connection():
    release = threading.Event()
    server = ScriptedServer(queued_behind_the_limit_script(release))

    async def main():
        async with inferwire.AsyncClient(*server.address, timeout=30) as client:
            first = client._conn
            sent = asyncio.ensure_future(client.server_live())
            await async_wait_until(lambda: len(server.requests) == 1, "the first call to reach the server")
            queued = asyncio.ensure_future(client.server_live())
            # The second call waits for the connection's only request slot (asyncio.Semaphore internals).
            await async_wait_until(lambda: len(first._slots._waiters or ()) == 1, "the second call to queue")
            release.set()
            assert await sent and await queued
            assert client.connections_opened == 2

    try:
        asyncio.run(main())
    finally:
        server.close()
    assert server.requests == [(0, LIVE), (1, LIVE)]
