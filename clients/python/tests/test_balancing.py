"""Balancing across a fleet: ``inferwire.BalancedClient`` and ``inferwire.aio.BalancedClient``.

Against three real servers (``serve --port 0``): calls spread over all of them; a server
stopped with SIGTERM or killed with SIGKILL under load costs no call (and, with retries
off, no more calls than it had in flight); ``dns:///localhost:PORT`` resolves; a DNS
answer that changes adds and closes endpoints. Against scripted servers (``scripted.py``):
power of two choices on real sockets, which failed attempts are tried again for which
calls, and the deadline bounding the retries. Choosing, back-off and target parsing are
also tested without sockets, with a seeded random source and an injected clock.

Nothing here sleeps for a fixed time: tests wait for conditions, polling with a bound.
Where time matters (back-off, DNS refreshes, deadlines between attempts) the client's
clock is a ``FakeClock`` the test moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pytest

import inferwire
from conftest import ServerProcess, started_server
from inferwire import _balance
from inferwire._proto import frames_pb2, status_pb2
from scripted import Peer, ScriptedServer

X = {"INPUT0": np.array([[1, 2, 3, 4]], np.float32), "INPUT1": np.array([[10, 20, 30, 40]], np.float32)}
LIVE = int(frames_pb2.SERVER_LIVE)
LIST_MODELS = int(frames_pb2.LIST_MODELS)


def assert_add_sub(result: inferwire.InferResult) -> None:
    np.testing.assert_array_equal(result["OUTPUT0"], [[11, 22, 33, 44]])


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


async def async_wait_until(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class InOrder(random.Random):
    """Draws endpoints in the order given: with equal loads the first listed wins (``pick_less_loaded``
    keeps the first drawn on a tie)."""

    def __new__(cls, order: Sequence[str]) -> "InOrder":
        return super().__new__(cls)  # before 3.11, random.Random.__new__ seeds with (hashes) its argument

    def __init__(self, order: Sequence[str]) -> None:
        super().__init__(0)
        self.order = list(order)

    def sample(self, population, k, **_):  # type: ignore[override]
        return sorted(population, key=lambda endpoint: self.order.index(endpoint.where))[:k]


def where(address: Tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


def status(client: Any) -> Dict[str, inferwire.EndpointStatus]:
    return {endpoint.address: endpoint for endpoint in client.endpoints}


def closed_port() -> int:
    """A loopback port nothing listens on (connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def served_requests(server: ServerProcess) -> int:
    """How many add_sub requests ``server`` answered, from its own statistics."""
    with inferwire.Client(*server.address, timeout=30) as client:
        return sum(version.request_count for version in client.model_statistics("add_sub"))


@contextlib.contextmanager
def fleet_of_three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[List[ServerProcess]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(started_server(tmp_path_factory.mktemp("fleet"))) for _ in range(3)]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Three servers that stay up (tests that stop one start their own, ``doomed_fleet``)."""
    with fleet_of_three(tmp_path_factory) as servers:
        yield servers


@pytest.fixture
def doomed_fleet(tmp_path_factory):
    """Three servers for one test, which may stop or kill them."""
    with fleet_of_three(tmp_path_factory) as servers:
        yield servers


# -- choosing, without sockets ------------------------------------------------------------------------


class Recording(random.Random):
    """A seeded random source that remembers every pair it drew."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.drawn: List[Tuple[Any, Any]] = []

    def sample(self, population, k, **kwargs):  # type: ignore[override]
        drawn = super().sample(population, k, **kwargs)
        self.drawn.append(tuple(drawn))
        return drawn


def test_power_of_two_choices_takes_the_less_loaded_of_two_drawn():
    loads = {"a": 0, "b": 3, "c": 3, "d": 9}
    rng = Recording(seed=20240607)
    chosen = [_balance.pick_less_loaded(list(loads), loads.__getitem__, rng) for _ in range(3000)]
    assert len(rng.drawn) == 3000
    for pick, (first, second) in zip(chosen, rng.drawn):
        assert first != second
        assert pick == (second if loads[second] < loads[first] else first)  # a tie keeps the first drawn
    counts = {name: chosen.count(name) for name in loads}
    assert counts["d"] == 0  # the most loaded loses every draw it is in
    assert counts["a"] == sum(1 for pair in rng.drawn if "a" in pair)  # the least loaded wins every draw it is in
    assert counts["b"] > 0 and counts["c"] > 0  # equal loads: the tie goes either way
    assert _balance.pick_less_loaded(["only"], lambda _: 5, rng) == "only"


def make_pool(addresses: Sequence[Tuple[str, int]], clock: FakeClock, **options: Any) -> _balance.Pool:
    settings: Dict[str, Any] = dict(rng=random.Random(7), backoff=1.0, max_backoff=4.0, resolve_interval=30.0)
    settings.update(options)
    return _balance.Pool(_balance.Target(addresses=tuple(addresses)), _balance.Endpoint, clock=clock, **settings)


def test_pool_counts_outstanding_calls_and_prefers_endpoints_the_call_has_not_tried():
    clock = FakeClock()
    pool = make_pool([("10.0.0.1", 1), ("10.0.0.2", 1), ("10.0.0.3", 1)], clock)
    a, b, c = pool.endpoints.values()
    held = [pool.pick([]) for _ in range(30)]
    assert sum(endpoint.outstanding for endpoint in (a, b, c)) == 30
    assert max(e.outstanding for e in (a, b, c)) - min(e.outstanding for e in (a, b, c)) <= 2  # P2C keeps it even
    for endpoint in held:
        pool.release(endpoint)
    assert (a.outstanding, b.outstanding, c.outstanding) == (0, 0, 0)
    assert pool.retries == 0
    # A retry goes to an endpoint the call has not tried, whatever the loads; once it tried all, to any.
    a.outstanding = 0
    b.outstanding = c.outstanding = 50
    for _ in range(20):
        retry = pool.pick([a])
        assert retry in (b, c)
        pool.release(retry)
    assert pool.retries == 20
    repeat = pool.pick([a, b, c])
    assert repeat is a
    pool.release(repeat)


def test_failed_connects_back_off_by_the_injected_clock():
    clock = FakeClock()
    pool = make_pool([("10.0.0.1", 1), ("10.0.0.2", 1)], clock)
    a, b = pool.endpoints.values()
    refused = inferwire.UnavailableError("could not connect to 10.0.0.1:1: Connection refused")
    expected_delays = [1.0, 2.0, 4.0, 4.0]  # doubling from backoff, capped at max_backoff
    for delay in expected_delays:
        pool.connect_failed(a, refused)
        pool.connect_failed(a, refused)  # a second caller that shared the failed attempt: counted once
        for _ in range(10):
            endpoint = pool.pick([])
            assert endpoint is b
            pool.release(endpoint)
        clock.advance(delay - 0.001)
        assert all(pool.pick([]) is b for _ in range(5))
        b.outstanding = 0
        clock.advance(0.001)
        assert any(pool.pick([]) is a for _ in range(50))  # back in the draw once its back-off is over
        a.outstanding = b.outstanding = 0
    assert a.connect_failures == 4
    pool.connected(a)
    assert a.connect_failures == 0
    # Every endpoint backing off: the call is refused, naming each one's failure.
    pool.connect_failed(a, refused)
    pool.connect_failed(b, inferwire.UnavailableError("could not connect to 10.0.0.2:1: No route to host"))
    with pytest.raises(inferwire.UnavailableError, match="10.0.0.1:1: .*Connection refused.*10.0.0.2:1: .*No route"):
        pool.pick([])


def test_an_endpoint_gone_from_dns_is_closed_once_its_calls_finish():
    clock = FakeClock()
    pool = make_pool([], clock, resolve_interval=10.0)
    assert pool.resolved([("10.0.0.1", 1), ("10.0.0.2", 1)]) == []
    a = pool.endpoints[("10.0.0.1", 1)]
    b = pool.endpoints[("10.0.0.2", 1)]
    a.outstanding = 2
    assert pool.resolved([("10.0.0.2", 1), ("10.0.0.3", 1)]) == []  # a still has calls: closed later
    assert list(pool.endpoints) == [("10.0.0.2", 1), ("10.0.0.3", 1)] and a.removed and not b.removed
    assert pool.release(a) is False
    assert pool.release(a) is True  # its last call ended: now close it
    # A failed or empty answer keeps the endpoints.
    assert pool.resolved(None) == [] and pool.resolved([]) == []
    assert list(pool.endpoints) == [("10.0.0.2", 1), ("10.0.0.3", 1)]
    # An idle endpoint that leaves is closed at once.
    assert pool.resolved([("10.0.0.3", 1)]) == [b]


def test_resolution_is_due_every_interval_by_the_injected_clock():
    clock = FakeClock()
    pool = _balance.Pool(
        _balance.Target(dns=("fleet.test", 8500)), _balance.Endpoint, clock=clock, rng=random.Random(1),
        backoff=1.0, max_backoff=1.0, resolve_interval=10.0,
    )
    pool.resolved([("10.0.0.1", 8500)])
    assert not pool.resolution_due()
    clock.advance(9.999)
    assert not pool.resolution_due()
    clock.advance(0.001)
    assert pool.resolution_due()
    assert not pool.resolution_due()  # one resolution at a time
    pool.resolved([("10.0.0.1", 8500)])
    assert not pool.resolution_due()


@pytest.mark.parametrize(
    "endpoints, expected",
    [
        ("127.0.0.1:8500", _balance.Target(addresses=(("127.0.0.1", 8500),))),
        (["a.internal:1", "b.internal:2", "a.internal:1"],
         _balance.Target(addresses=(("a.internal", 1), ("b.internal", 2)))),
        (["[::1]:8500", ("10.0.0.1", 9000)], _balance.Target(addresses=(("::1", 8500), ("10.0.0.1", 9000)))),
        ("dns:///inferwire.internal:8500", _balance.Target(dns=("inferwire.internal", 8500))),
    ],
)
def test_targets(endpoints, expected):
    assert _balance.parse_target(endpoints) == expected


@pytest.mark.parametrize(
    "endpoints, message",
    [
        ("localhost", "is not 'host:port'"),
        ([], "no endpoints given"),
        (["h:http"], "port 'http' is not a number"),
        (["h:0"], "not between 1 and 65535"),
        (["::1:8500"], "IPv6 address in brackets"),
        ("dns://8.8.8.8/fleet:8500", "'dns:///name:port'"),
        (["dns:///fleet:8500"], "given alone"),
        ([("h", "8500")], "not between 1 and 65535"),
    ],
)
def test_bad_targets_say_what_is_wrong(endpoints, message):
    with pytest.raises(ValueError, match=message):
        inferwire.BalancedClient(endpoints)
    with pytest.raises(ValueError, match=message):
        inferwire.AsyncBalancedClient(endpoints)


def test_bad_options_say_what_is_wrong():
    with pytest.raises(ValueError, match="max_attempts"):
        inferwire.BalancedClient(["h:1"], max_attempts=0)
    with pytest.raises(ValueError, match="max_backoff"):
        inferwire.BalancedClient(["h:1"], backoff=5.0, max_backoff=1.0)
    with pytest.raises(ValueError, match="resolve_interval"):
        inferwire.AsyncBalancedClient(["h:1"], resolve_interval=0)


# -- a fleet of three real servers ----------------------------------------------------------------------


def test_calls_spread_across_all_three_servers(fleet):
    before = [served_requests(server) for server in fleet]
    addresses = [where(server.address) for server in fleet]
    calls_per_thread, threads = 60, 4
    with inferwire.BalancedClient(addresses, timeout=30, rng=random.Random(3)) as client:
        def work() -> None:
            for _ in range(calls_per_thread):
                assert_add_sub(client.infer("add_sub", X))

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        endpoints = status(client)
        assert set(endpoints) == set(addresses)
        assert all(endpoint.connected and endpoint.outstanding == 0 for endpoint in endpoints.values())
        assert sum(endpoint.attempts for endpoint in endpoints.values()) == calls_per_thread * threads
        assert client.retries == 0
    served = [served_requests(server) - start for server, start in zip(fleet, before)]
    assert sum(served) == calls_per_thread * threads
    # Each server's share, from its own statistics: an even draw gives 80 each; 20 is far out of reach.
    assert all(count >= 20 for count in served), served


def test_async_calls_spread_across_all_three_servers(fleet):
    before = [served_requests(server) for server in fleet]
    addresses = [where(server.address) for server in fleet]

    async def main() -> None:
        async with inferwire.AsyncBalancedClient(addresses, timeout=30, rng=random.Random(5)) as client:
            for _ in range(6):
                results = await asyncio.gather(*(client.infer("add_sub", X) for _ in range(40)))
                for result in results:
                    assert_add_sub(result)
            assert sum(endpoint.attempts for endpoint in client.endpoints) == 240
            assert all(endpoint.connected for endpoint in client.endpoints)

    asyncio.run(main())
    served = [served_requests(server) - start for server, start in zip(fleet, before)]
    assert sum(served) == 240
    assert all(count >= 20 for count in served), served


def test_dns_localhost_resolves(fleet):
    port = fleet[0].address[1]
    expected = {_balance.display((info[4][0], port)) for info in socket.getaddrinfo("localhost", port)}
    assert f"127.0.0.1:{port}" in expected
    with inferwire.BalancedClient(f"dns:///localhost:{port}", timeout=30) as client:
        assert set(status(client)) == expected
        for _ in range(5):  # an address nothing listens on (::1, say) is tried, backed off, and skipped
            assert_add_sub(client.infer("add_sub", X))
        assert status(client)[f"127.0.0.1:{port}"].connected

    async def main() -> None:
        async with inferwire.AsyncBalancedClient(f"dns:///localhost:{port}", timeout=30) as client:
            assert set(status(client)) == expected
            assert_add_sub(await client.infer("add_sub", X))

    asyncio.run(main())

    def unknown(host: str, port: int) -> List[Tuple[str, int]]:  # as getaddrinfo fails, without asking a DNS server
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(inferwire.UnavailableError, match="cannot resolve no-such-host.invalid:8500: .*not known"):
        inferwire.BalancedClient("dns:///no-such-host.invalid:8500", resolver=unknown)
    with pytest.raises(inferwire.UnavailableError, match="fleet.test:8500 resolves to no address"):
        inferwire.BalancedClient("dns:///fleet.test:8500", resolver=lambda host, port: [])


def test_a_changed_dns_answer_adds_and_closes_endpoints(fleet):
    a, b, c = (server.address for server in fleet)
    answer = [a, b]
    asked: List[Tuple[str, int]] = []

    def resolver(host: str, port: int) -> List[Tuple[str, int]]:
        asked.append((host, port))
        return list(answer)

    clock = FakeClock()
    with inferwire.BalancedClient(
        "dns:///fleet.test:8500", timeout=30, resolver=resolver, clock=clock, resolve_interval=10.0,
        rng=random.Random(11),
    ) as client:
        assert asked == [("fleet.test", 8500)]
        assert set(status(client)) == {where(a), where(b)}
        for _ in range(20):
            assert_add_sub(client.infer("add_sub", X))
        assert all(endpoint.connected for endpoint in client.endpoints)
        leaving = client._pool.endpoints[a].client
        assert leaving is not None and leaving.connected

        answer[:] = [b, c]
        for _ in range(5):
            assert_add_sub(client.infer("add_sub", X))
        assert len(asked) == 1  # not due yet: the clock has not moved
        clock.advance(10.0)
        assert_add_sub(client.infer("add_sub", X))  # due: this call starts a resolution in the background
        wait_until(lambda: set(status(client)) == {where(b), where(c)}, "the new DNS answer to be applied")
        assert len(asked) == 2
        wait_until(lambda: not leaving.connected, "the endpoint that left to be closed")
        for _ in range(30):
            assert_add_sub(client.infer("add_sub", X))
        assert status(client)[where(c)].attempts > 0

        # A name that stops resolving keeps the endpoints it had.
        def failing(host: str, port: int) -> List[Tuple[str, int]]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        client._resolver = failing
        with pytest.raises(inferwire.UnavailableError, match="cannot resolve fleet.test:8500"):
            client.refresh()
        assert set(status(client)) == {where(b), where(c)}
        assert_add_sub(client.infer("add_sub", X))


class Load:
    """Threads calling ``infer`` through one client until stopped; ``pause`` holds them between calls."""

    def __init__(self, client: inferwire.BalancedClient, workers: int) -> None:
        self.client = client
        self.lock = threading.Lock()
        self.successes = 0
        self.failures: List[BaseException] = []
        self.idle = 0
        self.running = threading.Event()
        self.running.set()
        self.stopping = False
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]
        for thread in self.threads:
            thread.start()

    def _work(self) -> None:
        while True:
            if not self.running.is_set():
                with self.lock:
                    self.idle += 1
                self.running.wait()
                with self.lock:
                    self.idle -= 1
            if self.stopping:
                return
            try:
                assert_add_sub(self.client.infer("add_sub", X))
            except Exception as exc:  # noqa: BLE001 -- counted and reported by the test
                with self.lock:
                    self.failures.append(exc)
            else:
                with self.lock:
                    self.successes += 1

    def wait_for_successes(self, count: int) -> None:
        target = self.successes + count
        wait_until(lambda: self.successes >= target or self.failures, f"{count} more successful calls")
        assert not self.failures, self.failures[:3]

    def stop(self) -> None:
        self.stopping = True
        self.running.set()
        for thread in self.threads:
            thread.join(timeout=30)
            assert not thread.is_alive()


def test_sigterm_of_one_server_under_load_fails_no_call(doomed_fleet):
    addresses = [where(server.address) for server in doomed_fleet]
    victim = doomed_fleet[1]
    with inferwire.BalancedClient(addresses, timeout=30) as client:
        load = Load(client, workers=6)
        try:
            wait_until(lambda: all(e.attempts >= 20 for e in client.endpoints), "calls on every server")
            victim.process.send_signal(signal.SIGTERM)
            assert victim.process.wait(timeout=20) == 0  # a graceful exit: in-flight calls answered
            load.wait_for_successes(300)
        finally:
            load.stop()
        assert load.failures == []
        gone = status(client)[where(victim.address)]
        assert not gone.connected and gone.connect_failures >= 1
    assert "shutting down" in victim.log


def is_stopped(process: Any) -> bool:
    """Whether ``process`` has stopped (SIGSTOP): it writes nothing more."""
    with open(f"/proc/{process.pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


def stall(victim: ServerProcess, client: inferwire.BalancedClient, load: Load) -> int:
    """SIGSTOP ``victim`` under load, so that calls sent to it stay in flight; returns how many there are.

    Answers it wrote before it stopped are read meanwhile, while other calls carry on; after
    that its count only grows (and P2C sends new calls elsewhere).
    """
    address = where(victim.address)
    wait_until(lambda: all(e.attempts >= 20 for e in client.endpoints), "calls on every server")
    victim.process.send_signal(signal.SIGSTOP)
    wait_until(lambda: is_stopped(victim.process), "the server to stop")
    load.wait_for_successes(100)
    wait_until(lambda: status(client)[address].outstanding >= 1, "a call stuck on the stopped server")
    return status(client)[address].outstanding


def test_sigkill_of_one_server_under_load_fails_no_call_with_retries(doomed_fleet):
    addresses = [where(server.address) for server in doomed_fleet]
    victim = doomed_fleet[2]
    with inferwire.BalancedClient(addresses, timeout=30) as client:
        load = Load(client, workers=6)
        try:
            in_flight = stall(victim, client, load)
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait(timeout=20)
            wait_until(lambda: status(client)[where(victim.address)].outstanding == 0, "the lost calls to move")
            load.wait_for_successes(300)
        finally:
            load.stop()
        assert load.failures == []
        assert client.retries >= in_flight >= 1  # every call lost with the server was sent again elsewhere
        assert not status(client)[where(victim.address)].connected


def test_sigkill_without_retries_fails_at_most_the_calls_in_flight_there(doomed_fleet):
    addresses = [where(server.address) for server in doomed_fleet]
    victim = doomed_fleet[0]
    with inferwire.BalancedClient(addresses, timeout=30, retry_inference=False) as client:
        load = Load(client, workers=6)
        try:
            stall(victim, client, load)
            # No new calls: the count on the stopped server is now fixed (its calls cannot finish).
            load.running.clear()
            wait_until(
                lambda: load.idle + status(client)[where(victim.address)].outstanding == len(load.threads),
                "every worker to be idle or stuck on the stopped server",
            )
            in_flight = status(client)[where(victim.address)].outstanding
            assert in_flight >= 1
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait(timeout=20)
            wait_until(lambda: len(load.failures) >= in_flight, "the calls in flight on the killed server to fail")
            failed = list(load.failures)
            assert len(failed) == in_flight  # exactly those, and nothing else
            assert all(isinstance(error, inferwire.UnavailableError) for error in failed), failed
            # Calls after the kill are not lost: a failed connect sends them elsewhere, retries or not.
            load.failures.clear()
            load.running.set()
            load.wait_for_successes(200)
        finally:
            load.stop()
        assert load.failures == []


def test_async_sigkill_of_one_server_under_load_fails_no_call(doomed_fleet):
    addresses = [where(server.address) for server in doomed_fleet]
    victim = doomed_fleet[1]

    async def main() -> None:
        async with inferwire.AsyncBalancedClient(addresses, timeout=30) as client:
            failures: List[BaseException] = []
            successes = 0
            stopping = False

            async def work() -> None:
                nonlocal successes
                while not stopping:
                    try:
                        assert_add_sub(await client.infer("add_sub", X))
                        successes += 1
                    except Exception as exc:  # noqa: BLE001 -- reported below
                        failures.append(exc)

            workers = [asyncio.ensure_future(work()) for _ in range(8)]
            await async_wait_until(lambda: all(e.attempts >= 20 for e in client.endpoints), "calls on every server")
            victim.process.send_signal(signal.SIGSTOP)
            await async_wait_until(lambda: is_stopped(victim.process), "the server to stop")
            target = successes + 100  # answers it wrote before it stopped are read meanwhile
            await async_wait_until(lambda: successes >= target or failures, "100 more calls")
            await async_wait_until(lambda: status(client)[where(victim.address)].outstanding >= 1, "a stuck call")
            in_flight = status(client)[where(victim.address)].outstanding
            victim.process.send_signal(signal.SIGKILL)
            await async_wait_until(lambda: status(client)[where(victim.address)].outstanding == 0, "lost calls to move")
            target = successes + 300
            await async_wait_until(lambda: successes >= target or failures, "300 more calls")
            stopping = True
            await asyncio.gather(*workers)
            assert failures == []
            assert client.retries >= in_flight >= 1

    asyncio.run(main())


# -- which failed attempts go to another endpoint (scripted servers) ----------------------------------


def refuse(peer: Peer) -> None:
    """ERROR UNAVAILABLE before execution, as for a model that failed to load; the connection carries on."""
    peer.serve(lambda method, request_id: peer.error(method, request_id, "model 'm' failed to load: bad file"))


def refuse_after_goaway(peer: Peer) -> None:
    """What a draining server does with a REQUEST it reads after its GOAWAY."""
    method, request_id = peer.read_request()
    peer.goaway("server shutting down")
    peer.error(method, request_id, "connection is draining (GOAWAY sent); retry on a new connection")


def lose(peer: Peer) -> None:
    """The connection ends with the request in flight: it may have run."""
    peer.read_request()


FAILURES: Dict[str, Optional[Callable[[Peer], None]]] = {
    "not sent": None,  # nothing listens: connecting is refused
    "refused": refuse,
    "refused after GOAWAY": refuse_after_goaway,
    "lost in flight": lose,
}

CALLS = {
    "inference call": (LIVE, lambda client: client.server_live()),
    "management call": (LIST_MODELS, lambda client: client.list_models()),
}


def retried(failure: str, call: str, retry_inference: bool) -> bool:
    """The rule under test, spelled out."""
    if failure == "not sent":
        return True
    if call == "management call":
        return False  # never sent twice
    return failure != "lost in flight" or retry_inference  # a refusal never ran; a lost call may have


@pytest.mark.parametrize("asynchronous", [False, True], ids=["blocking", "asyncio"])
@pytest.mark.parametrize("retry_inference", [True, False], ids=["retries", "no-retries"])
@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("failure", list(FAILURES))
def test_which_failed_calls_go_to_another_endpoint(failure, call, retry_inference, asynchronous):
    # The first attempt always goes to the first endpoint (equal loads, InOrder), which fails it;
    # the second endpoint answers whatever it gets.
    script = FAILURES[failure]
    first = None if script is None else ScriptedServer(lambda number, peer: (peer.handshake(), script(peer)))
    second = ScriptedServer(lambda number, peer: (peer.handshake(), peer.serve()))
    first_address = ("127.0.0.1", closed_port()) if first is None else first.address
    addresses = [where(first_address), where(second.address)]
    method, invoke = CALLS[call]
    options = dict(timeout=30, retry_inference=retry_inference, rng=InOrder(addresses))
    expected = retried(failure, call, retry_inference)
    outcome: Dict[str, Any] = {}

    def record(client: Any, value: Any, error: Optional[BaseException]) -> None:
        outcome.update(value=value, error=error, retries=client.retries, first=status(client)[addresses[0]])

    try:
        if asynchronous:
            async def main() -> None:
                async with inferwire.AsyncBalancedClient(addresses, **options) as client:
                    try:
                        record(client, await invoke(client), None)
                    except inferwire.UnavailableError as error:
                        record(client, None, error)

            asyncio.run(main())
        else:
            with inferwire.BalancedClient(addresses, **options) as client:
                try:
                    record(client, invoke(client), None)
                except inferwire.UnavailableError as error:
                    record(client, None, error)
    finally:
        second.close()
        if first is not None:
            first.close()
    if expected:
        assert outcome["error"] is None and outcome["value"] is not None
    else:
        reasons = {"refused": "failed to load", "refused after GOAWAY": "draining", "lost in flight": "may have run"}
        assert reasons[failure] in str(outcome["error"])
    assert outcome["retries"] == int(expected)
    assert outcome["first"].backing_off == (failure == "not sent")  # only a failed connect backs off
    if first is not None:
        assert first.requests == [(0, method)]
    assert second.requests == ([(0, method)] if expected else [])


def test_calls_go_to_the_less_loaded_endpoint_on_real_sockets():
    # Endpoint a holds its first call until released; b answers at once. With two endpoints every
    # draw has both, and a tie goes to a (InOrder): the first call lands on a, and every call made
    # while it is outstanding there goes to b, the less loaded.
    release = threading.Event()

    def holding(number: int, peer: Peer) -> None:
        peer.handshake()
        method, request_id = peer.read_request()
        assert release.wait(timeout=30)
        peer.answer(method, request_id)
        peer.serve()

    a = ScriptedServer(holding)
    b = ScriptedServer(lambda number, peer: (peer.handshake(), peer.serve()))
    addresses = [where(a.address), where(b.address)]
    try:
        with inferwire.BalancedClient(addresses, timeout=30, rng=InOrder(addresses)) as client:
            held = threading.Thread(target=client.server_live)
            held.start()
            wait_until(lambda: len(a.requests) == 1, "the first call to reach a")
            assert status(client)[addresses[0]].outstanding == 1
            for _ in range(20):
                assert client.server_live()
            assert len(b.requests) == 20 and len(a.requests) == 1
            release.set()
            held.join(timeout=30)
            assert status(client)[addresses[0]].outstanding == 0
            assert client.server_live()  # loads equal again: the tie goes to a
            assert len(a.requests) == 2
    finally:
        release.set()
        a.close()
        b.close()


# -- the deadline bounds the retries ---------------------------------------------------------------------


@pytest.mark.parametrize("asynchronous", [False, True], ids=["blocking", "asyncio"])
def test_the_deadline_bounds_the_retries(asynchronous):
    # Each attempt is lost in flight after 40 s of the client's (fake) clock; the deadline is 100 s
    # and up to 50 attempts are allowed: attempts start at 0, 40 and 80 s, and after the third the
    # deadline has passed. (Real time left for an attempt stays 20 s or more.)
    clock = FakeClock()

    def slow_loss(number: int, peer: Peer) -> None:
        peer.handshake()
        peer.read_request()
        clock.advance(40.0)

    servers = [ScriptedServer(slow_loss), ScriptedServer(slow_loss)]
    addresses = [where(server.address) for server in servers]
    options = dict(timeout=100.0, max_attempts=50, clock=clock, rng=random.Random(2))
    try:
        if asynchronous:
            async def main() -> None:
                async with inferwire.AsyncBalancedClient(addresses, **options) as client:
                    with pytest.raises(inferwire.DeadlineExceededError, match="after 3 attempts.*may have run"):
                        await client.infer("add_sub", X)
                    assert client.retries == 2

            asyncio.run(main())
        else:
            with inferwire.BalancedClient(addresses, **options) as client:
                with pytest.raises(inferwire.DeadlineExceededError, match="after 3 attempts.*may have run"):
                    client.infer("add_sub", X)
                assert client.retries == 2
    finally:
        for server in servers:
            server.close()
    assert sum(len(server.requests) for server in servers) == 3
    assert all(len(server.requests) >= 1 for server in servers)  # the retry went to the endpoint not yet tried


def test_max_attempts_bounds_the_retries():
    servers = [ScriptedServer(lambda number, peer: (peer.handshake(), lose(peer))) for _ in range(2)]
    addresses = [where(server.address) for server in servers]
    try:
        with inferwire.BalancedClient(addresses, timeout=30, max_attempts=4) as client:
            with pytest.raises(inferwire.UnavailableError, match="may have run"):
                client.server_live()
            assert client.retries == 3
    finally:
        for server in servers:
            server.close()
    assert sum(len(server.requests) for server in servers) == 4


def test_every_endpoint_backing_off_fails_fast_and_names_the_failures():
    ports = [closed_port(), closed_port()]
    addresses = [f"127.0.0.1:{port}" for port in ports]
    clock = FakeClock()
    with inferwire.BalancedClient(addresses, timeout=30, clock=clock, backoff=5.0) as client:
        with pytest.raises(inferwire.UnavailableError, match="could not connect to 127.0.0.1:"):
            client.server_live()  # both tried, both refused
        assert all(endpoint.backing_off for endpoint in client.endpoints)
        with pytest.raises(inferwire.UnavailableError, match="every endpoint failed to connect.*refused"):
            client.server_live()
        assert all(endpoint.attempts == 1 for endpoint in client.endpoints)  # skipped, not tried again
        clock.advance(5.0)
        with pytest.raises(inferwire.UnavailableError, match="could not connect"):
            client.server_live()
        assert all(endpoint.attempts == 2 for endpoint in client.endpoints)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["blocking", "asyncio"])
def test_calls_share_a_failed_connect(asynchronous):
    # Five calls go to the one endpoint while its first connection is being made; the server refuses it
    # (GOAWAY RESOURCE_EXHAUSTED, as over its connection limit). One connection is made, and all five
    # fail with the server's reason; the endpoint backs off once.
    refuse = threading.Event()

    def over_the_limit(number: int, peer: Peer) -> None:
        assert refuse.wait(timeout=30)
        peer.goaway("this server serves at most 1 connections", code=status_pb2.RESOURCE_EXHAUSTED)

    server = ScriptedServer(over_the_limit)
    address = where(server.address)
    options = dict(timeout=30, max_attempts=1, clock=FakeClock(), backoff=5.0)
    errors: List[BaseException] = []
    try:
        if asynchronous:
            async def main() -> None:
                async with inferwire.AsyncBalancedClient([address], **options) as client:
                    calls = asyncio.gather(*(client.server_live() for _ in range(5)), return_exceptions=True)
                    await async_wait_until(
                        lambda: server.connections == 1 and status(client)[address].outstanding == 5, "five calls"
                    )
                    refuse.set()
                    errors.extend(await calls)
                    assert status(client)[address].connect_failures == 1

            asyncio.run(main())
        else:
            with inferwire.BalancedClient([address], **options) as client:
                def call() -> None:
                    try:
                        client.server_live()
                    except inferwire.InferWireError as error:
                        errors.append(error)

                threads = [threading.Thread(target=call) for _ in range(5)]
                for thread in threads:
                    thread.start()
                wait_until(lambda: server.connections == 1 and status(client)[address].outstanding == 5, "five calls")
                refuse.set()
                for thread in threads:
                    thread.join(timeout=30)
                assert status(client)[address].connect_failures == 1
    finally:
        refuse.set()
        server.close()
    assert len(errors) == 5
    assert all(isinstance(error, inferwire.ResourceExhaustedError) and "at most 1" in str(error) for error in errors)
    assert server.connections == 1


def test_closed_balanced_client_refuses_calls(fleet):
    client = inferwire.BalancedClient([where(server.address) for server in fleet], timeout=30)
    assert client.server_live()
    client.close()
    with pytest.raises(inferwire.UnavailableError, match="client closed"):
        client.server_live()
    assert not any(endpoint.connected for endpoint in client.endpoints)

    async def main() -> None:
        unopened = inferwire.AsyncBalancedClient([where(fleet[0].address)])
        with pytest.raises(inferwire.UnavailableError, match="not open"):
            await unopened.server_live()
        async with inferwire.AsyncBalancedClient([where(fleet[0].address)], timeout=30) as opened:
            assert await opened.server_live()
        with pytest.raises(inferwire.UnavailableError, match="client closed"):
            await opened.server_live()

    asyncio.run(main())
