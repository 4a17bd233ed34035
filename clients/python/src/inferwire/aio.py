"""The asyncio client: one TCP connection, many concurrent calls from any tasks."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from types import TracebackType
from typing import Any, Deque, Dict, Generic, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar

from numpy.typing import ArrayLike

from . import _api as api
from . import _tls
from . import _wire as wire
from ._api import Call, InferResult, ParameterValue, Principal, Version
from ._proto import frames_pb2, inference_pb2, management_pb2
from .client import Frame, decode_answer
from .errors import DeadlineExceededError, InferWireError, ProtocolError, UnavailableError, error_for

__all__ = ["AsyncClient"]

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


class AsyncClient:
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
        self.hello: Optional[frames_pb2.Hello] = None
        #: Who the connection acts as: the answer to ``token``, or the client certificate's
        #: principal from HELLO; None when the server has no authentication and no token was sent.
        self.principal: Optional[Principal] = None
        self._ssl = _tls.make_context(tls, ca=tls_ca, cert=tls_cert, key=tls_key, server_hostname=server_hostname)
        self._auth_frame = wire.encode_auth(token) if token is not None else None
        self._reader: Optional[asyncio.StreamReader] = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._pending: Dict[int, _Pending[Any]] = {}
        self._auth_waiters: Deque[asyncio.Future[Principal]] = deque()
        self._next_id = 0
        self._closed: Optional[InferWireError] = None
        self._slots: Optional[asyncio.Semaphore] = None
        self._read_task: Optional["asyncio.Task[None]"] = None

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

        ``connect`` and ``async with`` call this.
        """
        where = _tls.address(self.host, self.port)
        if self._ssl is None:
            opening = asyncio.open_connection(self.host, self.port)
        else:
            opening = asyncio.open_connection(
                self.host, self.port, ssl=self._ssl, server_hostname=self.server_hostname or self.host,
                ssl_handshake_timeout=self.connect_timeout,
            )
        try:
            reader, writer = await asyncio.wait_for(opening, self.connect_timeout)
        except (ssl.SSLError, ConnectionResetError, ConnectionAbortedError) as exc:
            if self._ssl is None:
                raise
            raise _tls.handshake_error(exc, where, timeout=self.connect_timeout) from exc
        self._reader, self._writer = reader, writer
        try:
            if self._ssl is not None:
                _tls.check_alpn(writer.get_extra_info("ssl_object").selected_alpn_protocol(), where)
            writer.write(wire.PREFACE + (self._auth_frame or b""))
            try:
                hello, principal = await asyncio.wait_for(self._handshake(), self.connect_timeout)
            except ssl.SSLError as exc:
                # In TLS 1.3 the server judges the client's certificate after the client's side of the
                # handshake is done: a refusal arrives as an alert in place of HELLO.
                raise _tls.handshake_error(exc, where, timeout=self.connect_timeout) from exc
            self.principal = wire.connection_principal(hello, principal, where)
        except BaseException:
            writer.close()
            raise
        self.hello = hello
        self._slots = asyncio.Semaphore(hello.max_concurrent_requests or wire.DEFAULT_MAX_CONCURRENT)
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop())

    @property
    def max_frame_size(self) -> int:
        """The largest frame payload the server accepts (from its HELLO)."""
        return (self.hello.max_frame_size if self.hello else 0) or wire.DEFAULT_MAX_FRAME_SIZE

    @property
    def tls_version(self) -> Optional[str]:
        """The TLS version in use (e.g. ``"TLSv1.3"``), or None on a plaintext connection."""
        tls = self._writer.get_extra_info("ssl_object") if self._writer is not None else None
        return tls.version() if isinstance(tls, (ssl.SSLObject, ssl.SSLSocket)) else None

    async def authenticate(self, token: str, *, timeout: Optional[float] = None) -> Principal:
        """Present new credentials on this connection and return the principal the server now acts as.

        For example a fresh JWT before the one the connection was opened with expires
        (after that, requests are answered ``UnauthenticatedError``). Requests sent
        after this call are served as the new principal. Credentials the server
        refuses end the connection: this raises ``UnauthenticatedError`` with the
        server's reason, and later calls fail with ``UnavailableError``.
        """
        frame = wire.encode_auth(token)
        writer = self._writer
        if writer is None or self.hello is None:
            raise UnavailableError("AsyncClient is not connected; use AsyncClient.connect() or 'async with'")
        if self._closed is not None:
            raise self._closed
        timeout = self.timeout if timeout is None else timeout
        waiter: asyncio.Future[Principal] = asyncio.get_running_loop().create_future()
        waiter.add_done_callback(_consume)  # an answer that comes after a timeout is not an unretrieved error
        self._auth_waiters.append(waiter)  # AUTH answers come in the order the frames were written
        try:
            writer.write(frame)
            await writer.drain()
        except OSError as exc:
            if waiter in self._auth_waiters:
                self._auth_waiters.remove(waiter)
            raise UnavailableError(f"could not send AUTH: {exc}") from exc
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except asyncio.TimeoutError:
            raise DeadlineExceededError(f"no answer to AUTH within {timeout} s") from None

    async def close(self) -> None:
        """Close the connection; calls still in flight fail with ``UnavailableError``."""
        self._shutdown(UnavailableError("client closed the connection"))
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
        if self._read_task is not None:
            self._read_task.cancel()
            try:
                await self._read_task
            except asyncio.CancelledError:
                pass

    async def __aenter__(self) -> AsyncClient:
        if self._writer is None:
            await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        await self.close()

    def _shutdown(self, error: InferWireError) -> None:
        if self._closed is None:
            self._closed = error
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            assert self._slots is not None  # requests are only pending once open() has run
            self._slots.release()
            if not entry.cancelled and not entry.future.done():
                entry.future.set_exception(error)
        self._fail_auth_waiters(error)

    def _fail_auth_waiters(self, error: InferWireError) -> None:
        waiters, self._auth_waiters = self._auth_waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)

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
        timeout: Optional[float] = None,
        compress: Optional[bool] = None,
    ) -> InferResult:
        """Run ``model`` on ``inputs`` (name -> numpy array) and return its outputs.

        ``outputs`` limits which outputs are returned; ``version`` is a version
        number, a label (``"stable"``/``"canary"``) or ``None`` to let the server
        route. ``priority`` is ``inferwire.Priority.HIGH`` or ``NORMAL``;
        ``routing_key`` pins a sticky canary; ``request_id`` is echoed back;
        ``parameters`` are passed to the model (bool, int, float or str values).
        """
        call = api.infer(
            model, inputs, outputs=outputs, version=version, priority=priority, routing_key=routing_key,
            request_id=request_id, parameters=parameters,
        )
        return await self._invoke(call, timeout=timeout, compress=compress)

    async def server_live(self, *, timeout: Optional[float] = None, compress: Optional[bool] = None) -> bool:
        """Whether the server is live."""
        return await self._invoke(api.server_live(), timeout=timeout, compress=compress)

    async def server_ready(self, *, timeout: Optional[float] = None, compress: Optional[bool] = None) -> bool:
        """Whether the server is ready: not shutting down and every model has a version serving."""
        return await self._invoke(api.server_ready(), timeout=timeout, compress=compress)

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

    # -- reading ----------------------------------------------------------------

    async def _read_frame(self) -> Optional[Frame]:
        assert self._reader is not None
        try:
            header = await self._reader.readexactly(wire.HEADER_SIZE)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise UnavailableError("connection ended inside a frame header") from None
            return None
        length, frame_type, flags, method, request_id, _ = wire.HEADER.unpack(header)
        if length > self.max_frame_size:
            raise ProtocolError(f"server sent a {length}-byte frame, over max_frame_size")
        try:
            payload = await self._reader.readexactly(length) if length else b""
        except asyncio.IncompleteReadError:
            raise UnavailableError("connection ended inside a frame") from None
        return frame_type, flags, method, request_id, payload

    async def _handshake(self) -> Tuple[frames_pb2.Hello, Optional[Principal]]:
        """HELLO, and the answer to the AUTH sent with the preface if one was."""
        frame = await self._read_frame()
        if frame is None:
            raise UnavailableError("server closed the connection before HELLO")
        hello = wire.check_hello(frame[0], frame[4])
        if self._auth_frame is None:
            return hello, None
        while True:
            frame = await self._read_frame()
            if frame is None:
                raise UnavailableError("server closed the connection before answering AUTH")
            frame_type, _, _, _, payload = frame
            if frame_type == wire.PING:
                assert self._writer is not None
                self._writer.write(wire.encode_frame(wire.PONG, payload[: wire.MAX_PING_PAYLOAD]))
            principal = wire.auth_answer(frame_type, payload)
            if principal is not None:
                return hello, principal

    async def _read_loop(self) -> None:
        error: InferWireError = UnavailableError("server closed the connection")
        try:
            while True:
                frame = await self._read_frame()
                if frame is None:
                    break
                self._dispatch(*frame)
        except InferWireError as exc:
            error = exc
        except OSError as exc:
            error = UnavailableError(f"connection lost: {exc}")
        self._shutdown(error)

    def _dispatch(self, frame_type: int, flags: int, method: int, request_id: int, payload: bytes) -> None:
        if frame_type in (wire.RESPONSE, wire.ERROR):
            entry = self._pending.pop(request_id, None)
            if entry is None:
                return
            assert self._slots is not None  # requests are only pending once open() has run
            self._slots.release()
            if entry.cancelled or entry.future.done():
                return
            try:
                entry.future.set_result(decode_answer(entry.call, frame_type, flags, payload, self.max_frame_size))
            except InferWireError as exc:
                entry.future.set_exception(exc)
        elif frame_type == wire.PING:
            assert self._writer is not None  # the read loop starts once open() has connected
            self._writer.write(wire.encode_frame(wire.PONG, payload[: wire.MAX_PING_PAYLOAD]))
        elif frame_type == wire.AUTH:
            principal = wire.parse_authenticated(payload)
            self.principal = principal
            if self._auth_waiters:
                waiter = self._auth_waiters.popleft()
                if not waiter.done():
                    waiter.set_result(principal)
        elif frame_type == wire.GOAWAY:
            goaway = wire.parse_goaway(payload)
            if self._closed is None:
                self._closed = wire.goaway_error(goaway)
            if goaway.code != wire.StatusCode.UNAVAILABLE:
                # e.g. UNAUTHENTICATED, saying which check the new credentials failed
                self._fail_auth_waiters(error_for(goaway.code, goaway.message))
                raise wire.goaway_error(goaway)

    # -- sending ----------------------------------------------------------------

    async def _invoke(self, call: Call[Any, T], *, timeout: Optional[float], compress: Optional[bool]) -> T:
        writer, slots = self._writer, self._slots
        if writer is None or slots is None or self.hello is None:
            raise UnavailableError("AsyncClient is not connected; use AsyncClient.connect() or 'async with'")
        timeout = self.timeout if timeout is None else timeout
        compress = (self.compression if compress is None else compress) and self.hello.compression
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        payload = call.request.SerializeToString()

        try:
            await asyncio.wait_for(slots.acquire(), None if deadline is None else deadline - loop.time())
        except asyncio.TimeoutError:
            raise DeadlineExceededError("deadline passed waiting for a free request slot on the connection") from None
        if self._closed is not None:
            slots.release()
            raise self._closed
        request_id = self._allocate_id()
        entry = _Pending(call, loop.create_future())
        self._pending[request_id] = entry
        try:
            writer.write(
                wire.encode_request(
                    call.method, request_id, payload,
                    timeout=None if deadline is None else deadline - loop.time(),
                    compress=compress, max_frame_size=self.max_frame_size,
                )
            )
            await writer.drain()
        except BaseException as exc:
            if self._pending.pop(request_id, None) is not None:
                slots.release()
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
            if self._next_id not in self._pending:
                return self._next_id

    def _cancel(self, request_id: int, entry: _Pending[Any]) -> None:
        """Send CANCEL; the id stays reserved until the server's final frame for it arrives."""
        if self._pending.get(request_id) is not entry:
            return
        entry.cancelled = True
        if not entry.future.done():
            entry.future.cancel()
        assert self._writer is not None  # entry is pending, so open() has connected
        try:
            self._writer.write(wire.encode_frame(wire.CANCEL, request_id=request_id))
        except (OSError, RuntimeError):
            pass
