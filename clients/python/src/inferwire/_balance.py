"""Balancing calls across a fleet of servers, shared by the blocking and the asyncio balancing clients.

What is here: targets (a list of ``host:port``, or ``dns:///name:port``), each endpoint's
bookkeeping (calls outstanding, connect failures, back-off), the choice of an endpoint per
attempt (power of two choices on calls outstanding), and the rule saying which failed
attempts are tried again on another endpoint. Nothing here does I/O except ``resolve``
(getaddrinfo); the clients hold the connections.
"""

from __future__ import annotations

import enum
import math
import random
import socket
from dataclasses import dataclass
from typing import Any, Callable, Dict, Generic, List, Optional, Sequence, Tuple, TypeVar, Union

from . import _wire as wire
from .errors import InferWireError, UnavailableError

#: A server's address: host (a name or an IP address) and port.
Address = Tuple[str, int]

#: Turns a DNS name and port into the addresses to balance over (``resolve`` by default).
Resolver = Callable[[str, int], List[Address]]

#: Seconds on a monotonic scale (``time.monotonic`` by default).
Clock = Callable[[], float]

#: What the balancing clients take as ``endpoints``.
Endpoints = Union[str, Sequence[Union[str, Address]]]

#: Methods below this number are the inference service (PROTOCOL.md section 3): inference and
#: read-only calls, safe to run twice. From 100 on, the management service: changes.
MANAGEMENT_METHODS = 100

DNS_SCHEME = "dns:///"


def display(address: Address) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str) -> Address:
    """``host:port`` or ``[v6 address]:port`` as ``(host, port)``; raises ``ValueError`` saying what is wrong."""
    if not isinstance(text, str):
        raise TypeError(f"an endpoint is a 'host:port' string or a (host, port) tuple, not {type(text).__name__}")
    host, colon, port_text = text.rpartition(":")
    if not colon or not host:
        raise ValueError(f"endpoint {text!r} is not 'host:port'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"endpoint {text!r}: write an IPv6 address in brackets, as '[::1]:8500'")
    return check_address((host, _port(port_text, text)))


def _port(text: str, endpoint: str) -> int:
    if not text.isdigit():
        raise ValueError(f"endpoint {endpoint!r}: port {text!r} is not a number")
    return int(text)


def check_address(address: Address) -> Address:
    host, port = address
    if not isinstance(host, str) or not host or any(c.isspace() for c in host):
        raise ValueError(f"endpoint host {host!r} is not a host name or IP address")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"endpoint {host}: port {port!r} is not between 1 and 65535")
    return host, port


@dataclass(frozen=True)
class Target:
    """What to balance over: fixed addresses, or a DNS name and port resolved again and again."""

    addresses: Tuple[Address, ...] = ()
    dns: Optional[Address] = None


def parse_target(endpoints: Endpoints) -> Target:
    """A list of ``host:port`` strings (or ``(host, port)`` tuples), one ``host:port``, or ``dns:///name:port``."""
    if isinstance(endpoints, str):
        if endpoints.startswith("dns:"):
            if not endpoints.startswith(DNS_SCHEME):
                raise ValueError(
                    f"target {endpoints!r}: write a DNS target as 'dns:///name:port' (a DNS server in the "
                    f"authority, 'dns://server/name:port', is not supported)"
                )
            return Target(dns=parse_address(endpoints[len(DNS_SCHEME):]))
        return Target(addresses=(parse_address(endpoints),))
    addresses: List[Address] = []
    for entry in endpoints:
        if isinstance(entry, tuple):
            if len(entry) != 2:
                raise ValueError(f"endpoint {entry!r} is not a (host, port) pair")
            address = check_address(entry)
        elif isinstance(entry, str) and entry.startswith("dns:"):
            raise ValueError(f"a DNS target ({entry!r}) is given alone, not in a list of endpoints")
        else:
            address = parse_address(entry)
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise ValueError("no endpoints given")
    return Target(addresses=tuple(addresses))


def resolve(host: str, port: int) -> List[Address]:
    """Every TCP address ``host`` has (getaddrinfo), with ``port``, each once, in a stable order."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return sorted({(str(info[4][0]), port) for info in found})


def resolve_error(name: Address, exc: BaseException) -> UnavailableError:
    return UnavailableError(f"cannot resolve {display(name)}: {exc}")


@dataclass(frozen=True)
class EndpointStatus:
    """One endpoint of a balancing client, as it stands (``BalancedClient.endpoints``)."""

    #: ``host:port`` (an IPv6 host in brackets).
    address: str
    #: Calls on it now: connecting, waiting to be sent, or waiting for their answer.
    outstanding: int
    #: Attempts made on it so far (first tries and retries).
    attempts: int
    #: Whether it has a connection that takes calls now.
    connected: bool
    #: Connect failures since it last connected.
    connect_failures: int
    #: Whether it is skipped because connecting to it failed less than its back-off ago.
    backing_off: bool


C = TypeVar("C")
E = TypeVar("E")


class Endpoint(Generic[C]):
    """One server: its client (made on first use), calls outstanding, connect failures and back-off."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self.where = display(address)
        self.client: Optional[C] = None
        self.outstanding = 0
        self.attempts = 0
        self.connect_failures = 0
        #: Connect attempts that failed, ever: a caller that waited for another's attempt compares it.
        self.failed_connects = 0
        self.retry_at = -math.inf
        self.last_error: Optional[InferWireError] = None
        #: No longer in the pool (gone from DNS): its client is closed once nothing is outstanding.
        self.removed = False


def recent_failure(endpoint: Endpoint[Any], now: float) -> Optional[InferWireError]:
    """A copy of the error ``endpoint`` failed to connect with, if it is backing off at ``now``."""
    if endpoint.retry_at > now and endpoint.last_error is not None:
        return wire.fresh(endpoint.last_error)
    return None


def pick_less_loaded(candidates: Sequence[E], load: Callable[[E], int], rng: random.Random) -> E:
    """Power of two choices: two distinct candidates drawn at random, the one with the lower load.

    The first drawn wins a tie, so ties are broken at random too.
    """
    if len(candidates) == 1:
        return candidates[0]
    first, second = rng.sample(list(candidates), 2)
    return second if load(second) < load(first) else first


EP = TypeVar("EP", bound="Endpoint[Any]")


class Pool(Generic[EP]):
    """The endpoints, the choice among them, back-off and DNS refreshes; no I/O.

    ``make`` makes an endpoint for an address (a client's subclass of ``Endpoint``). Not
    thread-safe: the blocking client calls it under a lock, the asyncio client from its loop.
    """

    def __init__(
        self,
        target: Target,
        make: Callable[[Address], EP],
        *,
        clock: Clock,
        rng: random.Random,
        backoff: float,
        max_backoff: float,
        resolve_interval: float,
    ) -> None:
        self.target = target
        self.clock = clock
        self.rng = rng
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.resolve_interval = resolve_interval
        self.make = make
        self.endpoints: Dict[Address, EP] = {}
        self.retries = 0
        self.closed: Optional[InferWireError] = None
        self.next_resolve = math.inf
        self.resolving = False
        for address in target.addresses:
            self.endpoints[address] = make(address)

    # -- choosing ----------------------------------------------------------------

    def pick(self, tried: Sequence[EP]) -> EP:
        """The endpoint for the next attempt, counted as outstanding until ``release``.

        Endpoints backing off are skipped; endpoints this call already tried are taken only
        when every other one is backing off. Raises ``UnavailableError`` when all are
        backing off (or there are none).
        """
        if self.closed is not None:
            raise wire.fresh(self.closed)
        now = self.clock()
        ready = [endpoint for endpoint in self.endpoints.values() if endpoint.retry_at <= now]
        if not ready:
            raise self._nothing_to_pick()
        untried = [endpoint for endpoint in ready if endpoint not in tried]
        chosen = pick_less_loaded(untried or ready, lambda endpoint: endpoint.outstanding, self.rng)
        chosen.outstanding += 1
        chosen.attempts += 1
        if tried:
            self.retries += 1
        return chosen

    def _nothing_to_pick(self) -> UnavailableError:
        if not self.endpoints:
            return UnavailableError("no endpoints to send the call to")
        reasons = "; ".join(
            f"{endpoint.where}: {endpoint.last_error.message if endpoint.last_error else 'unknown'}"
            for endpoint in self.endpoints.values()
        )
        return UnavailableError(
            f"every endpoint failed to connect less than its back-off ago, none to send the call to ({reasons})"
        )

    def release(self, endpoint: EP) -> bool:
        """An attempt on ``endpoint`` ended; True if its client should now be closed (it left the pool)."""
        endpoint.outstanding -= 1
        return endpoint.removed and endpoint.outstanding == 0

    # -- connecting ---------------------------------------------------------------

    def connected(self, endpoint: EP) -> None:
        endpoint.connect_failures = 0
        endpoint.retry_at = -math.inf

    def connect_failed(self, endpoint: EP, error: InferWireError) -> None:
        """Skip ``endpoint`` for its back-off: ``backoff`` seconds, doubling with each failure in a row,
        at most ``max_backoff``. Callers that shared one failed attempt count it once."""
        now = self.clock()
        endpoint.last_error = error
        if endpoint.retry_at > now:
            return  # already backing off for this failure
        endpoint.connect_failures += 1
        delay = min(self.max_backoff, self.backoff * 2.0 ** min(endpoint.connect_failures - 1, 64))
        endpoint.retry_at = now + delay

    # -- DNS ------------------------------------------------------------------------

    def resolution_due(self) -> bool:
        """Whether the caller should re-resolve the DNS name now (it then calls ``resolved``)."""
        if self.target.dns is None or self.resolving or self.closed is not None or self.clock() < self.next_resolve:
            return False
        self.resolving = True
        return True

    def resolved(self, addresses: Optional[Sequence[Address]]) -> List[EP]:
        """Apply a resolution's answer (None: it failed); returns the endpoints to close now.

        New addresses join the pool; endpoints whose address is gone leave it, closed at
        once if nothing is outstanding on them, else when their last attempt ends. A failed
        or empty answer keeps the pool as it is.
        """
        self.resolving = False
        self.next_resolve = self.clock() + self.resolve_interval
        if not addresses or self.closed is not None:
            return []
        wanted = set(addresses)
        to_close: List[EP] = []
        for address in list(self.endpoints):
            if address not in wanted:
                endpoint = self.endpoints.pop(address)
                endpoint.removed = True
                if endpoint.outstanding == 0:
                    to_close.append(endpoint)
        for address in addresses:
            if address not in self.endpoints:
                self.endpoints[address] = self.make(address)
        return to_close

    # -- the whole pool -----------------------------------------------------------------

    def close(self, error: InferWireError) -> List[EP]:
        """Take no more calls; returns every endpoint, to close."""
        if self.closed is None:
            self.closed = error
        endpoints = list(self.endpoints.values())
        for endpoint in endpoints:
            endpoint.removed = True
        return endpoints

    def status(self, connected: Callable[[EP], bool]) -> Tuple[EndpointStatus, ...]:
        now = self.clock()
        return tuple(
            EndpointStatus(
                address=endpoint.where,
                outstanding=endpoint.outstanding,
                attempts=endpoint.attempts,
                connected=connected(endpoint),
                connect_failures=endpoint.connect_failures,
                backing_off=endpoint.retry_at > now,
            )
            for endpoint in self.endpoints.values()
        )


def check_options(*, max_attempts: int, backoff: float, max_backoff: float, resolve_interval: float) -> None:
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts must be an int of at least 1, not {max_attempts!r}")
    for name, value in (("backoff", backoff), ("max_backoff", max_backoff)):
        if not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise ValueError(f"{name} must be a number of seconds, 0 or more, not {value!r}")
    if max_backoff < backoff:
        raise ValueError(f"max_backoff ({max_backoff}) is below backoff ({backoff})")
    if not isinstance(resolve_interval, (int, float)) or not 0 < resolve_interval:
        raise ValueError(f"resolve_interval must be a number of seconds above 0, not {resolve_interval!r}")


# -- which failed attempts go to another endpoint -----------------------------------------------------


class Outcome(enum.Enum):
    """How an attempt failed, as far as running the call twice is concerned."""

    #: Not sent: connecting failed, or the connection stopped taking calls before it was sent.
    NOT_SENT = "not sent"
    #: Sent, and answered UNAVAILABLE before it was executed (see ``failed_attempt``).
    REFUSED = "refused"
    #: Sent, and the connection ended without an answer: it may have run.
    LOST = "lost"


def failed_attempt(exc: BaseException) -> Optional[Tuple[Outcome, InferWireError]]:
    """How a failed attempt on a connection ended, and the error the caller gets if it is not retried;
    None for an answer or a local failure (a deadline, a bad argument), which is the call's result.

    The server answers a REQUEST ERROR ``UNAVAILABLE`` only before executing it: after its
    GOAWAY (the connection is draining), for a model or version that failed to load or has
    no ready version, for a version shutting down (its queue refuses the request), and for
    a management call while the model manager is not running. An ``UnavailableError``
    the client raised itself (the connection ended with the call in flight) may have run.
    """
    if isinstance(exc, wire.NotExecuted):
        return (Outcome.REFUSED if exc.sent else Outcome.NOT_SENT), exc.error
    if isinstance(exc, UnavailableError):
        return (Outcome.REFUSED if wire.answered_by_server(exc) else Outcome.LOST), exc
    return None


def may_retry(outcome: Outcome, method: int, retry_inference: bool) -> bool:
    """Whether a call that failed so goes to another endpoint.

    A call never sent always does. Once sent, a management call never does. An inference
    call (inference and the read-only calls) does when the server refused it before
    executing it, and, unless ``retry_inference`` is off, when it may have run.
    """
    if outcome is Outcome.NOT_SENT:
        return True
    if method >= MANAGEMENT_METHODS:
        return False
    return outcome is Outcome.REFUSED or retry_inference
