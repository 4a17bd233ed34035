"""The asyncio clients: one connection at a time, many concurrent calls from any tasks (``AsyncClient``),
and one connection per server of a fleet, calls balanced across them (``BalancedClient``)."""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections import deque
from types import TracebackType
from typing import Any, Deque, Dict, Generic, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar

from numpy.typing import ArrayLike

from . import _api as api
from . import _balance
from . import _tls
from . import _wire as wire
from ._api import Call, InferResult, ParameterValue, Principal, Version
from ._balance import Address, Clock, Endpoints, EndpointStatus, Resolver
from ._proto import frames_pb2, inference_pb2, management_pb2
from .client import Frame, decode_answer
from .errors import DeadlineExceededError, InferWireError, ProtocolError, UnavailableError, error_for

__all__ = ["AsyncClient", "BalancedClient"]

T = TypeVar("T")


class _Pending(Generic[T]):
    """A request in flight: its call, where the answer goes, and whether we gave up on it."""

    __slots__ = ("call", "future", "cancelled")

    def __init__(self, call: Call[Any, T], future: asyncio.Future[T]) -> None:
        self.call = call
        self.future = future
        self.cancelled = False


def _consume(future: "asyncio.Future[Any]") -> None:
    if not future.cancelled():
        future.exception()


class _Connection:
    """One connection of an :class:`AsyncClient`: its streams, HELLO, principal, calls in flight.

    :meth:`open` connects, sends the preface (and AUTH) and reads HELLO (and the AUTH
    answer); then a reader task dispatches the server's frames until the connection
    ends. Once it has received GOAWAY or ended, :attr:`closed` says why and it takes no
    new calls: the client opens another connection for them.
    """

    def __init__(
        self, where: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_frame_size: int
    ) -> None:
        self.where = where
        self.reader = reader
        self.writer = writer
        self.hello = frames_pb2.Hello()
        #: Who the connection acts as (see :attr:`AsyncClient.principal`).
        self.principal: Optional[Principal] = None
        self._recv_limit = max_frame_size
        self.pending: Dict[int, _Pending[Any]] = {}
        self._auth_waiters: Deque[asyncio.Future[Principal]] = deque()
        self._next_id = 0
        #: Why the connection takes no new calls (GOAWAY received, ended, closed); None while it does.
        self.closed: Optional[InferWireError] = None
        #: The server's GOAWAY, once received.
        self.goaway: Optional[frames_pb2.GoAway] = None
        self._limit = wire.DEFAULT_MAX_CONCURRENT
        self._slots = asyncio.Semaphore(self._limit)
        self.read_task: Optional["asyncio.Task[None]"] = None

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        context: Optional[ssl.SSLContext],
        server_hostname: Optional[str],
        auth_frame: Optional[bytes],
        connect_timeout: float,
    ) -> _Connection:
        """Connect, send the preface (and AUTH), read HELLO (and the AUTH answer), start reading."""
        where = _tls.address(host, port)
        if context is None:
            opening = asyncio.open_connection(host, port)
        else:
            opening = asyncio.open_connection(
                host, port, ssl=context, server_hostname=server_hostname or host,
                ssl_handshake_timeout=connect_timeout,
            )
        try:
            reader, writer = await asyncio.wait_for(opening, connect_timeout)
        except (ssl.SSLError, ConnectionResetError, ConnectionAbortedError) as exc:
            if context is None:
                raise
            raise _tls.handshake_error(exc, where, timeout=connect_timeout) from exc
        conn = cls(where, reader, writer, wire.DEFAULT_MAX_FRAME_SIZE)
        try:
            if context is not None:
                _tls.check_alpn(writer.get_extra_info("ssl_object").selected_alpn_protocol(), where)
            writer.write(wire.PREFACE + (auth_frame or b""))
            try:
                hello, principal = await asyncio.wait_for(conn._handshake(auth_frame is not None), connect_timeout)
            except ssl.SSLError as exc:
                # In TLS 1.3 the server judges the client's certificate after the client's side of the
                # handshake is done: a refusal arrives as an alert in place of HELLO.
                raise _tls.handshake_error(exc, where, timeout=connect_timeout) from exc
            conn.principal = wire.connection_principal(hello, principal, where)
        except BaseException:
            writer.close()
            raise
        conn.hello = hello
        conn._recv_limit = conn.max_frame_size
        conn._limit = hello.max_concurrent_requests or wire.DEFAULT_MAX_CONCURRENT
        conn._slots = asyncio.Semaphore(conn._limit)
        conn.read_task = asyncio.get_running_loop().create_task(conn._read_loop())
        return conn

    @property
    def max_frame_size(self) -> int:
        return self.hello.max_frame_size or wire.DEFAULT_MAX_FRAME_SIZE

    @property
    def tls_version(self) -> Optional[str]:
        tls = self.writer.get_extra_info("ssl_object")
        return tls.version() if isinstance(tls, (ssl.SSLObject, ssl.SSLSocket)) else None

    @property
    def finished(self) -> bool:
        """Whether the reader task has ended (the connection is gone)."""
        return self.read_task is None or self.read_task.done()

    async def authenticate(self, token: str, timeout: Optional[float]) -> Principal:
        """Send AUTH with ``token`` and wait for the server's answer."""
        frame = wire.encode_auth(token)
        if self.closed is not None:
            raise wire.fresh(self.closed)
        waiter: asyncio.Future[Principal] = asyncio.get_running_loop().create_future()
        waiter.add_done_callback(_consume)  # an answer that comes after a timeout is not an unretrieved error
        self._auth_waiters.append(waiter)  # AUTH answers come in the order the frames were written
        try:
            self.writer.write(frame)
            await self.writer.drain()
        except OSError as exc:
            if waiter in self._auth_waiters:
                self._auth_waiters.remove(waiter)
            raise UnavailableError(f"could not send AUTH: {exc}") from exc
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceededError(f"no answer to AUTH within {timeout} s") from None

    async def close(self, error: InferWireError) -> None:
        """Fail what is in flight with ``error`` and close the connection."""
        self._shutdown(error)
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass
        if self.read_task is not None:
            self.read_task.cancel()
            try:
                await self.read_task
            except asyncio.CancelledError:
                pass

    def _shutdown(self, error: InferWireError, in_flight: Optional[InferWireError] = None) -> None:
        """Take no new calls (``error`` says why) and fail the calls in flight with ``in_flight`` (or ``error``)."""
        if self.closed is None:
            self.closed = error
        pending, self.pending = self.pending, {}
        for entry in pending.values():
            if not entry.cancelled and not entry.future.done():
                entry.future.set_exception(in_flight or error)
        self._fail_auth_waiters(error)
        self._wake_slot_waiters()

    def _wake_slot_waiters(self) -> None:
        """Callers waiting for a slot wake, find the connection closed and go to a new one."""
        for _ in range(self._limit):
            self._slots.release()

    def _fail_auth_waiters(self, error: InferWireError) -> None:
        waiters, self._auth_waiters = self._auth_waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)

    # -- reading ----------------------------------------------------------------

    async def _read_frame(self) -> Optional[Frame]:
        try:
            header = await self.reader.readexactly(wire.HEADER_SIZE)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise UnavailableError("connection ended inside a frame header") from None
            return None
        length, frame_type, flags, method, request_id, _ = wire.HEADER.unpack(header)
        if length > self._recv_limit:
            raise ProtocolError(f"server sent a {length}-byte frame, over max_frame_size")
        try:
            payload = await self.reader.readexactly(length) if length else b""
        except asyncio.IncompleteReadError:
            raise UnavailableError("connection ended inside a frame") from None
        return frame_type, flags, method, request_id, payload

    async def _handshake(self, authenticating: bool) -> Tuple[frames_pb2.Hello, Optional[Principal]]:
        """HELLO, and the answer to the AUTH sent with the preface if one was."""
        frame = await self._read_frame()
        if frame is None:
            raise UnavailableError("server closed the connection before HELLO")
        hello = wire.check_hello(frame[0], frame[4])
        if not authenticating:
            return hello, None
        while True:
            frame = await self._read_frame()
            if frame is None:
                raise UnavailableError("server closed the connection before answering AUTH")
            frame_type, _, _, _, payload = frame
            if frame_type == wire.PING:
                self.writer.write(wire.encode_frame(wire.PONG, payload[: wire.MAX_PING_PAYLOAD]))
            principal = wire.auth_answer(frame_type, payload)
            if principal is not None:
                return hello, principal

    async def _read_loop(self) -> None:
        error: InferWireError = UnavailableError("server closed the connection")
        in_flight: Optional[InferWireError] = None
        try:
            while True:
                frame = await self._read_frame()
                if frame is None:
                    in_flight = wire.in_flight_error(self.goaway)
                    break
                self._dispatch(*frame)
        except InferWireError as exc:
            error = exc
        except OSError as exc:
            error = UnavailableError(f"connection lost: {exc}")
        self._shutdown(error, in_flight)
        self.writer.close()

    def _dispatch(self, frame_type: int, flags: int, method: int, request_id: int, payload: bytes) -> None:
        if frame_type in (wire.RESPONSE, wire.ERROR):
            entry = self.pending.pop(request_id, None)
            if entry is None:
                return
            self._slots.release()
            if entry.cancelled or entry.future.done():
                return
            if frame_type == wire.ERROR and self.goaway is not None:
                entry.future.set_exception(wire.refused_after_goaway(wire.error_from_status(payload)))
                return
            try:
                entry.future.set_result(decode_answer(entry.call, frame_type, flags, payload, self.max_frame_size))
            except InferWireError as exc:
                entry.future.set_exception(exc)
        elif frame_type == wire.PING:
            self.writer.write(wire.encode_frame(wire.PONG, payload[: wire.MAX_PING_PAYLOAD]))
        elif frame_type == wire.AUTH:
            principal = wire.parse_authenticated(payload)
            self.principal = principal
            if self._auth_waiters:
                waiter = self._auth_waiters.popleft()
                if not waiter.done():
                    waiter.set_result(principal)
        elif frame_type == wire.GOAWAY:
            goaway = wire.parse_goaway(payload)
            self.goaway = goaway
            if self.closed is None:
                self.closed = wire.goaway_error(goaway)
            self._wake_slot_waiters()
            if goaway.code != wire.StatusCode.UNAVAILABLE:
                # e.g. UNAUTHENTICATED, saying which check the new credentials failed
                self._fail_auth_waiters(error_for(goaway.code, goaway.message))
                raise wire.goaway_error(goaway)

    # -- sending ----------------------------------------------------------------

    async def invoke(
        self, call: Call[Any, T], payload: bytes, *, deadline: Optional[float], timeout: Optional[float],
        compress: bool,
    ) -> T:
        """Send ``call`` and wait for its answer.

        Raises ``NotExecuted`` for a call the server never executed: not sent because the
        connection stopped taking calls first, or refused after the server's GOAWAY.
        """
        compress = compress and self.hello.compression
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(self._slots.acquire(), None if deadline is None else deadline - loop.time())
        except asyncio.TimeoutError:
            raise DeadlineExceededError("deadline passed waiting for a free request slot on the connection") from None
        if self.closed is not None:
            self._slots.release()
            raise wire.NotExecuted(self.closed)
        request_id = self._allocate_id()
        entry = _Pending(call, loop.create_future())
        self.pending[request_id] = entry
        try:
            self.writer.write(
                wire.encode_request(
                    call.method, request_id, payload,
                    timeout=None if deadline is None else deadline - loop.time(),
                    compress=compress, max_frame_size=self.max_frame_size,
                )
            )
            await self.writer.drain()
        except BaseException as exc:
            if self.pending.pop(request_id, None) is not None:
                self._slots.release()
            if isinstance(exc, OSError):
                raise UnavailableError(f"could not send request: {exc}") from exc
            raise

        try:
            return await asyncio.wait_for(
                asyncio.shield(entry.future), None if deadline is None else max(0.0, deadline - loop.time())
            )
        except asyncio.TimeoutError:
            self._cancel(request_id, entry)
            raise DeadlineExceededError(f"no answer within {timeout} s; request cancelled") from None
        except asyncio.CancelledError:
            self._cancel(request_id, entry)  # the caller's task was cancelled: tell the server
            raise

    def _allocate_id(self) -> int:
        while True:
            self._next_id = self._next_id % wire.MAX_REQUEST_ID + 1
            if self._next_id not in self.pending:
                return self._next_id

    def _cancel(self, request_id: int, entry: _Pending[Any]) -> None:
        """Send CANCEL; the id stays reserved until the server's final frame for it arrives."""
        if self.pending.get(request_id) is not entry:
            return
        entry.cancelled = True
        if not entry.future.done():
            entry.future.cancel()
        try:
            self.writer.write(wire.encode_frame(wire.CANCEL, request_id=request_id))
        except (OSError, RuntimeError):
            pass


class _AsyncCalls:
    """The call methods of the asyncio clients, each a thin wrapper over ``_invoke``, which sends one
    call and waits for its answer (over one connection, or balanced across several)."""

    # -- inference service ------------------------------------------------------

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, ArrayLike],
        *,
        outputs: Optional[Sequence[str]] = None,
        version: Version = None,
        priority: int = inference_pb2.NORMAL,
        routing_key: str = "",
        request_id: str = "",
        parameters: Optional[Mapping[str, ParameterValue]] = None,
        traceparent: str = "",
        tracestate: str = "",
        timeout: Optional[float] = None,
        compress: Optional[bool] = None,
    ) -> InferResult:
        """Run ``model`` on ``inputs`` (name -> numpy array) and return its outputs.

        ``outputs`` limits which outputs are returned; ``version`` is a version
        number, a label (``"stable"``/``"canary"``) or ``None`` to let the server
        route. ``priority`` is ``inferwire.Priority.HIGH`` or ``NORMAL``;
        ``routing_key`` pins a sticky canary; ``request_id`` is echoed back;
        ``parameters`` are passed to the model (bool, int, float or str values).
        ``traceparent`` and ``tracestate`` are the caller's W3C Trace Context header
        values (PROTOCOL.md, "Trace context"): the server's spans and log records for
        the request join that trace. Empty: none; a value the server cannot parse is
        ignored, not refused.
        """
        call = api.infer(
            model, inputs, outputs=outputs, version=version, priority=priority, routing_key=routing_key,
            request_id=request_id, parameters=parameters, traceparent=traceparent, tracestate=tracestate,
        )
        return await self._invoke(call, timeout=timeout, compress=compress)

    async def server_live(self, *, timeout: Optional[float] = None, compress: Optional[bool] = None) -> bool:
        """Whether the server is live."""
        return await self._invoke(api.server_live(), timeout=timeout, compress=compress)

    async def server_ready(self, *, timeout: Optional[float] = None, compress: Optional[bool] = None) -> bool:
        """Whether the server is ready: not shutting down and every model has a version serving."""
        return await self._invoke(api.server_ready(), timeout=timeout, compress=compress)

    async def server_not_ready_reasons(
        self, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> List[str]:
        """Why the server is not ready, one sentence per reason (shutting down, a model with no
        version serving, a version that failed to load); empty when it is ready."""
        return await self._invoke(api.server_not_ready_reasons(), timeout=timeout, compress=compress)

    async def server_metadata(
        self, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> inference_pb2.ServerMetadataResponse:
        """The server's name, version, protocol versions and extensions."""
        return await self._invoke(api.server_metadata(), timeout=timeout, compress=compress)

    async def model_ready(
        self, model: str, version: Version = None, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> bool:
        """Whether ``model`` (at ``version``) is ready; ``False`` for unknown models."""
        return await self._invoke(api.model_ready(model, version), timeout=timeout, compress=compress)

    async def model_metadata(
        self, model: str, version: Version = None, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> inference_pb2.ModelMetadataResponse:
        """Versions, platform, input and output specs and ``max_batch_size`` of ``model``."""
        return await self._invoke(api.model_metadata(model, version), timeout=timeout, compress=compress)

    async def model_statistics(
        self, model: str = "", *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> List[inference_pb2.VersionStatistics]:
        """Per-version request, execution and timing statistics (every model when ``model`` is empty)."""
        return await self._invoke(api.model_statistics(model), timeout=timeout, compress=compress)

    # -- management service -----------------------------------------------------

    async def list_models(
        self, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> List[management_pb2.ModelStatus]:
        """Every model's status: versions, their states, and the rollout."""
        return await self._invoke(api.list_models(), timeout=timeout, compress=compress)

    async def model_status(
        self, model: str, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> management_pb2.ModelStatus:
        """One model's versions (state, counts, mean compute time) and rollout."""
        return await self._invoke(api.model_status(model), timeout=timeout, compress=compress)

    async def load_model(
        self, model: str, version: int, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> management_pb2.VersionStatus:
        """Load ``version`` of ``model``; answers once it is READY or FAILED."""
        return await self._invoke(api.load_model(model, version), timeout=timeout, compress=compress)

    async def unload_model(
        self, model: str, version: int, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> management_pb2.VersionStatus:
        """Unload ``version`` of ``model`` once its queued and running requests have finished."""
        return await self._invoke(api.unload_model(model, version), timeout=timeout, compress=compress)

    async def set_traffic(
        self,
        model: str,
        canary_version: int,
        percent: int,
        *,
        sticky: bool = False,
        timeout: Optional[float] = None,
        compress: Optional[bool] = None,
    ) -> management_pb2.Rollout:
        """Send ``percent`` % of unlabelled requests to ``canary_version`` (0 clears the canary)."""
        call = api.set_traffic(model, canary_version, percent, sticky)
        return await self._invoke(call, timeout=timeout, compress=compress)

    async def promote(
        self, model: str, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> management_pb2.Rollout:
        """Make the canary the stable version (the old stable stays loaded for rollback)."""
        return await self._invoke(api.promote(model), timeout=timeout, compress=compress)

    async def rollback(
        self, model: str, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> management_pb2.Rollout:
        """Withdraw the canary, or else restore the previous stable version."""
        return await self._invoke(api.rollback(model), timeout=timeout, compress=compress)

    async def set_shadow(
        self, model: str, version: int, percent: int, *, timeout: Optional[float] = None,
        compress: Optional[bool] = None,
    ) -> management_pb2.Rollout:
        """Mirror ``percent`` % of stable's unlabelled requests to ``version`` (0 stops shadowing)."""
        return await self._invoke(api.set_shadow(model, version, percent), timeout=timeout, compress=compress)

    async def history(
        self, model: str, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> List[management_pb2.HistoryEntry]:
        """Who changed what about ``model``'s versions and rollout, and when."""
        return await self._invoke(api.history(model), timeout=timeout, compress=compress)

    # -- sending ----------------------------------------------------------------

    async def _invoke(self, call: Call[Any, T], *, timeout: Optional[float], compress: Optional[bool]) -> T:
        raise NotImplementedError


class AsyncClient(_AsyncCalls):
    """An asyncio InferWire client; every call method is a coroutine.

    Create it with ``await AsyncClient.connect(host, port)`` or
    ``async with AsyncClient(host, port) as client:``. Concurrent calls from
    many tasks share the one connection and are matched by request id.
    ``timeout`` and ``compression`` are the per-call defaults, as for
    :class:`~inferwire.Client`, and every call method takes keyword-only
    ``timeout`` and ``compress`` to override them for the one call.

    ``tls``, ``tls_ca``, ``tls_cert``, ``tls_key``, ``server_hostname`` and
    ``token`` are as for :class:`~inferwire.Client`: TLS with verification on,
    and a bearer token presented (and its principal, :attr:`principal`, known)
    before ``connect`` returns. Bad arguments raise at construction; failures to
    connect (:class:`~inferwire.TLSHandshakeError`,
    :class:`~inferwire.UnauthenticatedError`, ...) when connecting.

    Once connected it reconnects as :class:`~inferwire.Client` does: after the
    connection received GOAWAY or closed, the next call opens a new one (one
    task reconnects, the others wait for it), and a call that never ran is retried
    once. :meth:`close` ends reconnection for good; :attr:`connections_opened` and
    :attr:`connected` are as for ``Client``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: Optional[float] = None,
        compression: bool = False,
        connect_timeout: float = 10.0,
        tls: _tls.TLSOption = None,
        tls_ca: Optional[_tls.PathLike] = None,
        tls_cert: Optional[_tls.PathLike] = None,
        tls_key: Optional[_tls.PathLike] = None,
        server_hostname: Optional[str] = None,
        token: Optional[str] = None,
    ) -> None:
        self.host, self.port = host, port
        self.timeout = timeout
        self.compression = compression
        self.connect_timeout = connect_timeout
        self.server_hostname = server_hostname
        self._ssl = _tls.make_context(tls, ca=tls_ca, cert=tls_cert, key=tls_key, server_hostname=server_hostname)
        if token is not None:
            wire.encode_auth(token)  # TypeError, ValueError
        self._token = token  # the credentials connections open with: the last ones the server accepted
        self._conn: Optional[_Connection] = None
        self._connecting: Optional["asyncio.Task[_Connection]"] = None
        self._retired: List[_Connection] = []  # earlier connections still answering calls sent on them
        self._closed: Optional[InferWireError] = None
        self._connections_opened = 0

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        timeout: Optional[float] = None,
        compression: bool = False,
        connect_timeout: float = 10.0,
        tls: _tls.TLSOption = None,
        tls_ca: Optional[_tls.PathLike] = None,
        tls_cert: Optional[_tls.PathLike] = None,
        tls_key: Optional[_tls.PathLike] = None,
        server_hostname: Optional[str] = None,
        token: Optional[str] = None,
    ) -> AsyncClient:
        """Open a connection and wait for the server's HELLO (and its answer to ``token``)."""
        client = cls(
            host, port, timeout=timeout, compression=compression, connect_timeout=connect_timeout, tls=tls,
            tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, server_hostname=server_hostname, token=token,
        )
        await client.open()
        return client

    async def open(self) -> None:
        """Connect, send the preface (and AUTH), read HELLO (and the AUTH answer).

        ``connect`` and ``async with`` call this; on a client whose connection still
        takes calls it does nothing, and after :meth:`close` it raises.
        """
        await self._connection(None, opening=True)

    @property
    def hello(self) -> Optional[frames_pb2.Hello]:
        """The current connection's HELLO (None before :meth:`open`)."""
        return self._conn.hello if self._conn is not None else None

    @property
    def principal(self) -> Optional[Principal]:
        """Who the current connection acts as: the answer to ``token`` (or :meth:`authenticate`), or the
        client certificate's principal from HELLO; None when the server has no authentication and no
        token was sent."""
        return self._conn.principal if self._conn is not None else None

    @property
    def max_frame_size(self) -> int:
        """The largest frame payload the server accepts (from the current connection's HELLO)."""
        return self._conn.max_frame_size if self._conn is not None else wire.DEFAULT_MAX_FRAME_SIZE

    @property
    def tls_version(self) -> Optional[str]:
        """The TLS version in use (e.g. ``"TLSv1.3"``), or None on a plaintext connection."""
        return self._conn.tls_version if self._conn is not None else None

    @property
    def connections_opened(self) -> int:
        """How many connections this client has opened: 1 once open, one more per reconnection."""
        return self._connections_opened

    @property
    def connected(self) -> bool:
        """Whether the current connection takes calls: False before :meth:`open`, once it has received
        GOAWAY or closed (the next call then reconnects) and after :meth:`close`."""
        return self._closed is None and self._conn is not None and self._conn.closed is None

    @property
    def _pending(self) -> Dict[int, _Pending[Any]]:
        return self._conn.pending if self._conn is not None else {}

    async def _connection(
        self, deadline: Optional[float], token: Optional[str] = None, *, opening: bool = False
    ) -> Tuple[_Connection, bool]:
        """The current connection, or a new one if it takes no calls; and whether it was opened with ``token``.

        One task opens the new connection (presenting ``token``, else the client's
        credentials); the others wait for it (until ``deadline``) and get the same
        connection, or a copy of the same error. Only ``open`` makes the first connection.
        """
        if self._closed is not None:
            raise wire.fresh(self._closed)
        conn = self._conn
        if conn is None and not opening:
            raise UnavailableError("AsyncClient is not connected; use AsyncClient.connect() or 'async with'")
        if conn is not None and conn.closed is None:
            return conn, False
        attempt = self._connecting
        leading = attempt is None
        if attempt is None:
            presented = self._token if token is None else token
            # A task of its own, so that a caller cancelled while waiting does not cancel it for the others.
            attempt = self._connecting = asyncio.get_running_loop().create_task(self._reconnect(presented))
            attempt.add_done_callback(_consume)
        loop = asyncio.get_running_loop()
        # asyncio.wait neither raises on its timeout nor cancels the attempt when this task is cancelled.
        done, _ = await asyncio.wait({attempt}, timeout=None if deadline is None else max(0.0, deadline - loop.time()))
        if not done:
            raise DeadlineExceededError("deadline passed waiting for the client to reconnect")
        failure = attempt.exception()
        if failure is not None:
            raise wire.fresh(failure) from failure.__cause__
        return attempt.result(), leading and token is not None

    async def _reconnect(self, token: Optional[str]) -> _Connection:
        first = self._conn is None
        try:
            try:
                conn = await _Connection.open(
                    self.host, self.port, context=self._ssl, server_hostname=self.server_hostname,
                    auth_frame=wire.encode_auth(token) if token is not None else None,
                    connect_timeout=self.connect_timeout,
                )
            except (OSError, asyncio.TimeoutError) as exc:  # refused, unreachable, timed out
                if first:
                    raise  # as before reconnection existed: the caller of open() sees the OSError itself
                raise wire.reconnect_error(exc, _tls.address(self.host, self.port), self.connect_timeout) from exc
            closed = self._closed
            if closed is not None:  # close() came while connecting
                await conn.close(closed)
                raise wire.fresh(closed)
            old, self._conn = self._conn, conn
            self._connections_opened += 1
            self._retired = [c for c in self._retired if not c.finished]
            if old is not None and not old.finished:
                if old.pending:
                    self._retired.append(old)
                else:
                    old.writer.close()  # nothing left to answer on it; its reader task ends at the end of the stream
            return conn
        finally:
            self._connecting = None

    async def authenticate(self, token: str, *, timeout: Optional[float] = None) -> Principal:
        """Present new credentials and return the principal the server now acts as.

        For example a fresh JWT before the one the connection was opened with expires
        (after that, requests are answered ``UnauthenticatedError``). Requests sent
        after this call are served as the new principal, and connections the client
        opens later present these credentials. Credentials the server refuses end the
        connection: this raises ``UnauthenticatedError`` with the server's reason, and
        the next call reconnects with the credentials accepted before.
        """
        wire.encode_auth(token)  # TypeError, ValueError
        timeout = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        conn, opened_with_token = await self._connection(deadline, token)
        if opened_with_token and conn.principal is not None:
            principal = conn.principal
        else:
            principal = await conn.authenticate(token, None if deadline is None else max(0.0, deadline - loop.time()))
        self._token = token
        return principal

    async def close(self) -> None:
        """Close the connection for good: calls in flight and later calls fail with ``UnavailableError``."""
        error = UnavailableError("client closed the connection")
        if self._closed is None:
            self._closed = error
        connections, self._retired = [c for c in (self._conn, *self._retired) if c is not None], []
        for conn in connections:
            await conn.close(error)

    async def __aenter__(self) -> AsyncClient:
        if self._conn is None:
            await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        await self.close()

    # -- sending ----------------------------------------------------------------

    async def _invoke(self, call: Call[Any, T], *, timeout: Optional[float], compress: Optional[bool]) -> T:
        timeout = self.timeout if timeout is None else timeout
        compress = self.compression if compress is None else compress
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        payload = call.request.SerializeToString()
        retried = False
        while True:
            conn, _ = await self._connection(deadline)
            try:
                return await conn.invoke(call, payload, deadline=deadline, timeout=timeout, compress=compress)
            except wire.NotExecuted as not_executed:
                if retried:
                    raise wire.fresh(not_executed.error) from None
                retried = True  # never ran: once more, on a new connection


# -- balancing across a fleet ---------------------------------------------------------------------


class _AsyncEndpoint(_balance.Endpoint[AsyncClient]):
    """An endpoint of a :class:`BalancedClient`: its :class:`AsyncClient`, made on first use."""


class BalancedClient(_AsyncCalls):
    """An asyncio client for a fleet of servers: one connection per server, each call sent to one.

    The asyncio twin of :class:`inferwire.BalancedClient`, with the same arguments and
    rules (choosing, back-off, retrying, DNS refreshes); every call method is a coroutine.
    Create it with ``await BalancedClient.connect(endpoints)`` or ``async with
    BalancedClient(endpoints) as client:``, which resolve a DNS target (raising
    ``UnavailableError`` if it does not resolve); connections open on first use, each an
    :class:`AsyncClient`.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        timeout: Optional[float] = None,
        compression: bool = False,
        connect_timeout: float = 10.0,
        tls: _tls.TLSOption = None,
        tls_ca: Optional[_tls.PathLike] = None,
        tls_cert: Optional[_tls.PathLike] = None,
        tls_key: Optional[_tls.PathLike] = None,
        server_hostname: Optional[str] = None,
        token: Optional[str] = None,
        retry_inference: bool = True,
        max_attempts: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        resolve_interval: float = 30.0,
        clock: Clock = time.monotonic,
        rng: Optional[random.Random] = None,
        resolver: Optional[Resolver] = None,
    ) -> None:
        target = _balance.parse_target(endpoints)
        _balance.check_options(
            max_attempts=max_attempts, backoff=backoff, max_backoff=max_backoff, resolve_interval=resolve_interval
        )
        self.timeout = timeout
        self.compression = compression
        self.connect_timeout = connect_timeout
        self.retry_inference = retry_inference
        self.max_attempts = max_attempts
        self._context = _tls.make_context(tls, ca=tls_ca, cert=tls_cert, key=tls_key, server_hostname=server_hostname)
        if server_hostname is None and self._context is not None and target.dns is not None:
            server_hostname = target.dns[0]
        self._server_hostname = server_hostname
        if token is not None:
            wire.encode_auth(token)  # TypeError, ValueError
        self._token = token
        self._clock = clock
        self._resolver = resolver or _balance.resolve
        self._pool = _balance.Pool(
            target, _AsyncEndpoint, clock=clock, rng=rng or random.Random(), backoff=backoff,
            max_backoff=max_backoff, resolve_interval=resolve_interval,
        )
        self._opened = False
        self._resolution: Optional["asyncio.Task[None]"] = None

    @classmethod
    async def connect(
        cls,
        endpoints: Endpoints,
        *,
        timeout: Optional[float] = None,
        compression: bool = False,
        connect_timeout: float = 10.0,
        tls: _tls.TLSOption = None,
        tls_ca: Optional[_tls.PathLike] = None,
        tls_cert: Optional[_tls.PathLike] = None,
        tls_key: Optional[_tls.PathLike] = None,
        server_hostname: Optional[str] = None,
        token: Optional[str] = None,
        retry_inference: bool = True,
        max_attempts: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        resolve_interval: float = 30.0,
        clock: Clock = time.monotonic,
        rng: Optional[random.Random] = None,
        resolver: Optional[Resolver] = None,
    ) -> BalancedClient:
        """Make the client and :meth:`open` it."""
        client = cls(
            endpoints, timeout=timeout, compression=compression, connect_timeout=connect_timeout, tls=tls,
            tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, server_hostname=server_hostname, token=token,
            retry_inference=retry_inference, max_attempts=max_attempts, backoff=backoff, max_backoff=max_backoff,
            resolve_interval=resolve_interval, clock=clock, rng=rng, resolver=resolver,
        )
        await client.open()
        return client

    async def open(self) -> None:
        """Resolve a DNS target (raising ``UnavailableError`` if it does not resolve); connections open on
        first use. ``connect`` and ``async with`` call this; once open it does nothing, after :meth:`close`
        it raises."""
        if self._pool.closed is not None:
            raise wire.fresh(self._pool.closed)
        if self._opened:
            return
        if self._pool.target.dns is not None:
            self._pool.resolving = True
            await self._apply(await self._resolve(self._pool.target.dns, raising=True))
        self._opened = True

    # -- the fleet ------------------------------------------------------------------------------

    @property
    def endpoints(self) -> Tuple[EndpointStatus, ...]:
        """Each endpoint as it stands: address, calls outstanding, attempts, connected, back-off."""
        return self._pool.status(lambda endpoint: endpoint.client is not None and endpoint.client.connected)

    @property
    def retries(self) -> int:
        """Attempts made after a call's first attempt failed, over the client's life."""
        return self._pool.retries

    async def refresh(self) -> None:
        """Resolve a DNS target again now and update the endpoints (with a list of endpoints: nothing).

        Raises ``UnavailableError`` if the name does not resolve; the endpoints then stay.
        """
        dns = self._pool.target.dns
        if dns is not None:
            await self._apply(await self._resolve(dns, raising=True))

    async def _resolve(self, dns: Address, *, raising: bool) -> Optional[List[Address]]:
        try:
            # getaddrinfo blocks: in the loop's default executor, as asyncio's own lookups are.
            addresses = await asyncio.get_running_loop().run_in_executor(None, self._resolver, *dns)
        except Exception as exc:  # noqa: BLE001 -- socket.gaierror, or whatever a given resolver raises
            if raising:
                raise _balance.resolve_error(dns, exc) from exc
            return None
        if not addresses and raising:
            raise UnavailableError(f"{_balance.display(dns)} resolves to no address")
        return addresses

    async def _apply(self, addresses: Optional[List[Address]]) -> None:
        await self._close_endpoints(self._pool.resolved(addresses))

    async def _resolve_in_background(self) -> None:
        dns = self._pool.target.dns
        assert dns is not None
        await self._apply(await self._resolve(dns, raising=False))

    async def _close_endpoints(self, endpoints: Sequence[_AsyncEndpoint]) -> None:
        for endpoint in endpoints:
            if endpoint.client is not None:
                await endpoint.client.close()

    async def close(self) -> None:
        """Close every connection for good: calls in flight and later calls fail with ``UnavailableError``."""
        endpoints = self._pool.close(UnavailableError("client closed"))
        resolution, self._resolution = self._resolution, None
        if resolution is not None and not resolution.done():
            resolution.cancel()
        await self._close_endpoints(endpoints)

    async def __aenter__(self) -> BalancedClient:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        await self.close()

    # -- sending ----------------------------------------------------------------------------------

    async def _invoke(self, call: Call[Any, T], *, timeout: Optional[float], compress: Optional[bool]) -> T:
        if not self._opened and self._pool.closed is None:
            raise UnavailableError("BalancedClient is not open; use BalancedClient.connect() or 'async with'")
        timeout = self.timeout if timeout is None else timeout
        compress = self.compression if compress is None else compress
        deadline = None if timeout is None else self._clock() + timeout
        payload = call.request.SerializeToString()
        tried: List[_AsyncEndpoint] = []
        while True:
            if self._pool.resolution_due():
                self._resolution = asyncio.get_running_loop().create_task(self._resolve_in_background())
            endpoint = self._pool.pick(tried)
            tried.append(endpoint)
            try:
                return await self._attempt(endpoint, call, payload, deadline, timeout, compress)
            except (wire.NotExecuted, UnavailableError) as exc:
                failed = _balance.failed_attempt(exc)
                assert failed is not None
                outcome, error = failed
                retry = _balance.may_retry(outcome, call.method, self.retry_inference)
                if not retry or len(tried) >= self.max_attempts:
                    raise wire.fresh(error) from None
                if deadline is not None and self._clock() >= deadline:
                    raise DeadlineExceededError(
                        f"deadline passed after {len(tried)} attempts; the last one failed: {error}"
                    ) from None
            finally:
                if self._pool.release(endpoint):
                    await self._close_endpoints([endpoint])

    async def _attempt(
        self, endpoint: _AsyncEndpoint, call: Call[Any, T], payload: bytes, deadline: Optional[float],
        timeout: Optional[float], compress: bool,
    ) -> T:
        # A connection's waits are on the loop's clock; the call's deadline is on self._clock.
        loop = asyncio.get_running_loop()
        local = None if deadline is None else loop.time() + (deadline - self._clock())
        conn = await self._connect(endpoint, local)
        return await conn.invoke(call, payload, deadline=local, timeout=timeout, compress=compress)

    async def _connect(self, endpoint: _AsyncEndpoint, deadline: Optional[float]) -> _Connection:
        """``endpoint``'s connection, opened if need be; raises ``NotExecuted`` if that fails."""
        failure = _balance.recent_failure(endpoint, self._clock())
        if failure is not None:  # it failed since this call picked it: no second attempt within its back-off
            raise wire.NotExecuted(failure)
        client = endpoint.client
        if client is None:
            host, port = endpoint.address
            client = endpoint.client = AsyncClient(
                host, port, timeout=self.timeout, compression=self.compression, connect_timeout=self.connect_timeout,
                tls=self._context, server_hostname=self._server_hostname, token=self._token,
            )
        try:
            # Concurrent callers share one connection attempt (AsyncClient._connection).
            conn, _ = await client._connection(deadline, opening=True)
        except DeadlineExceededError:
            raise
        except InferWireError as exc:
            error = exc
        except (OSError, asyncio.TimeoutError) as exc:  # the first connection's failures come unwrapped
            error = wire.reconnect_error(exc, endpoint.where, self.connect_timeout, verb="connect")
        else:
            self._pool.connected(endpoint)
            return conn
        self._pool.connect_failed(endpoint, error)
        raise wire.NotExecuted(error)
