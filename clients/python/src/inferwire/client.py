"""The blocking clients: one connection at a time, many concurrent calls from any threads (``Client``),
and one connection per server of a fleet, calls balanced across them (``BalancedClient``)."""

from __future__ import annotations

import io
import random
import socket
import ssl
import threading
import time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as wait_futures
from types import TracebackType
from typing import Any, Callable, Deque, Dict, Generic, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar

from numpy.typing import ArrayLike

from . import _api as api
from . import _balance
from . import _tls
from . import _wire as wire
from ._api import Call, InferResult, ParameterValue, Principal, Version
from ._balance import Address, Clock, Endpoints, EndpointStatus, Resolver
from ._proto import frames_pb2, inference_pb2, management_pb2
from .errors import DeadlineExceededError, InferWireError, ProtocolError, UnavailableError, error_for

__all__ = ["Client", "BalancedClient"]

T = TypeVar("T")

#: A frame as read: type, flags, method, request id, payload.
Frame = Tuple[int, int, int, int, bytes]


class _Pending(Generic[T]):
    """A request in flight: its call, where the answer goes, and whether we gave up on it."""

    __slots__ = ("call", "future", "cancelled")

    def __init__(self, call: Call[Any, T]) -> None:
        self.call = call
        self.future: Future[T] = Future()
        self.cancelled = False


class _TLSStream(io.RawIOBase):
    """TLS over a connected socket, through an ``ssl.SSLObject`` and memory BIOs.

    OpenSSL does not allow one connection's ``SSL`` object to be used by two threads at
    once, and an ``ssl.SSLSocket`` read by the reader thread while other threads send
    would do exactly that. Here every use of the ``SSLObject`` holds ``_tls_lock``,
    and only for the (short) encryption or decryption; the socket is read and written
    outside it, so the reader thread keeps reading while senders block on a full
    socket (TCP is the flow control: PROTOCOL.md section 2). Encrypted bytes are
    queued in the order OpenSSL produced them and sent by whichever thread holds
    ``_wire_lock``.
    """

    _CHUNK = 256 * 1024

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_hostname: str) -> None:
        super().__init__()
        self._sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self._incoming, self._outgoing, server_side=False, server_hostname=server_hostname)
        self._tls_lock = threading.Lock()  # the SSLObject and its BIOs
        self._frame_lock = threading.Lock()  # one sender at a time, so frames stay whole
        self._wire_lock = threading.Lock()  # the socket's sending side; whoever holds it drains _queue
        self._queue: Deque[bytes] = deque()

    def handshake(self) -> None:
        """Run the client side of the handshake (raises ``ssl`` errors and ``OSError``)."""
        while True:
            failure: Optional[ssl.SSLError] = None
            done = False
            with self._tls_lock:
                try:
                    self.tls.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    failure = exc
                self._collect()  # our next flight, or the alert telling the server why we gave up
            try:
                self._flush(block=True)
            except OSError:
                if failure is None:
                    raise
            if failure is not None:
                raise failure
            if done:
                return
            self._fill()

    def _collect(self) -> None:
        """Queue what OpenSSL wrote (call with ``_tls_lock``, so the queue keeps its order)."""
        if self._outgoing.pending:
            self._queue.append(self._outgoing.read())

    def _flush(self, *, block: bool) -> None:
        """Send queued bytes unless another thread is at it (it sends ours too: it drains to empty)."""
        while self._queue:
            if not self._wire_lock.acquire(blocking=block):
                return
            try:
                while self._queue:
                    self._sock.sendall(self._queue.popleft())
            finally:
                self._wire_lock.release()
            block = False  # bytes queued after our check are sent by the thread that queued them

    def _fill(self) -> None:
        data = self._sock.recv(self._CHUNK)
        with self._tls_lock:
            if data:
                self._incoming.write(data)
            else:
                self._incoming.write_eof()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        """Decrypted bytes into ``buffer``; 0 at the end of the stream (reader thread only)."""
        view = memoryview(buffer).cast("B")
        while True:
            with self._tls_lock:
                try:
                    data: Optional[bytes] = self.tls.read(len(view))
                except ssl.SSLWantReadError:
                    data = None
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    data = b""  # close_notify, or the TCP stream ended without one
                self._collect()  # e.g. an answer to a key update
            self._flush(block=False)
            if data is not None:
                view[: len(data)] = data
                return len(data)
            self._fill()

    def sendall(self, data: bytes) -> None:
        """Encrypt and send ``data`` whole, before any other thread's data."""
        view = memoryview(data)
        with self._frame_lock:
            for start in range(0, len(view), self._CHUNK):
                with self._tls_lock:
                    self.tls.write(view[start:start + self._CHUNK])
                    self._collect()
                self._flush(block=True)

    def close_notify(self) -> None:
        """Tell the server the stream ends here (best effort, never blocks on the socket)."""
        with self._tls_lock:
            try:
                self.tls.unwrap()
            except (ssl.SSLError, ValueError):
                pass  # SSLWantReadError: the server's close_notify is not awaited
            self._collect()
        try:
            self._flush(block=False)
        except OSError:
            pass


def decode_answer(call: Call[Any, T], frame_type: int, flags: int, payload: bytes, max_frame_size: int) -> T:
    """Turn a RESPONSE or ERROR frame into the call's value, or raise its error."""
    if frame_type == wire.ERROR:
        raise wire.error_from_status(payload)
    if flags & wire.FLAG_COMPRESSED:
        payload = wire.inflate(payload, max_frame_size)
    response = call.response_type()
    try:
        response.ParseFromString(payload)
    except Exception as exc:  # noqa: BLE001 -- protobuf DecodeError
        raise ProtocolError(f"unparseable response for method {call.method}: {exc}") from None
    return call.result(response)

class _Connection:
    """One connection of a :class:`Client`: its socket (and TLS), HELLO, principal, calls in flight.

    Opening it connects, sends the preface (and AUTH) and reads HELLO (and the AUTH
    answer); then a reader thread dispatches the server's frames until the connection
    ends. Once it has received GOAWAY or ended, :attr:`closed` says why and it takes no
    new calls: the client opens another connection for them.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        context: Optional[ssl.SSLContext],
        server_hostname: Optional[str],
        token: Optional[str],
        connect_timeout: float,
    ) -> None:
        self.where = where = _tls.address(host, port)
        #: Who the connection acts as (see :attr:`Client.principal`).
        self.principal: Optional[Principal] = None
        self._recv_limit = wire.DEFAULT_MAX_FRAME_SIZE
        start = wire.PREFACE + (wire.encode_auth(token) if token is not None else b"")
        self.tls: Optional[_TLSStream] = None
        self._sock = socket.create_connection((host, port), timeout=connect_timeout)
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._reader: io.BufferedIOBase
            self._sendall: Callable[[bytes], None]
            if context is None:
                self._reader = self._sock.makefile("rb")
                self._sendall = self._sock.sendall
            else:
                self.tls = _TLSStream(self._sock, context, server_hostname or host)
                try:
                    self.tls.handshake()
                except (ssl.SSLError, OSError) as exc:
                    raise _tls.handshake_error(exc, where, timeout=connect_timeout) from exc
                _tls.check_alpn(self.tls.tls.selected_alpn_protocol(), where)
                self._reader = io.BufferedReader(self.tls, buffer_size=64 * 1024)
                self._sendall = self.tls.sendall
            try:
                self._sendall(start)
                self.hello = self._read_hello()
                authenticated = self._read_auth_answer() if token is not None else None
            except ssl.SSLError as exc:
                # In TLS 1.3 the server judges the client's certificate after the client's side of the
                # handshake is done: a refusal arrives as an alert in place of HELLO.
                raise _tls.handshake_error(exc, where, timeout=connect_timeout) from exc
            self.principal = wire.connection_principal(self.hello, authenticated, where)
            self._recv_limit = self.max_frame_size
            self._sock.settimeout(None)
        except BaseException:
            if hasattr(self, "_reader"):
                self._reader.close()
            self._sock.close()
            raise
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._auth_lock = threading.Lock()
        self.pending: Dict[int, _Pending[Any]] = {}
        self._auth_waiters: Deque[Future[Principal]] = deque()
        self._next_id = 0
        #: Why the connection takes no new calls (GOAWAY received, ended, closed); None while it does.
        self.closed: Optional[InferWireError] = None
        #: The server's GOAWAY, once received.
        self.goaway: Optional[frames_pb2.GoAway] = None
        self._limit = self.hello.max_concurrent_requests or wire.DEFAULT_MAX_CONCURRENT
        # A plain Semaphore: when the connection stops taking calls it is released
        # _limit times at once, so that every caller waiting for a slot wakes and moves on.
        self._slots = threading.Semaphore(self._limit)
        self.thread = threading.Thread(target=self._read_loop, name=f"inferwire-reader-{where}", daemon=True)
        self.thread.start()

    @property
    def max_frame_size(self) -> int:
        return self.hello.max_frame_size or wire.DEFAULT_MAX_FRAME_SIZE

    def _read_exact(self, n: int) -> Optional[bytes]:
        data = self._reader.read(n)
        if len(data) != n:
            if not data:
                return None
            raise UnavailableError(f"connection ended inside a frame ({len(data)} of {n} bytes)")
        return data

    def _read_frame(self) -> Optional[Frame]:
        header = self._read_exact(wire.HEADER_SIZE)
        if header is None:
            return None
        length, frame_type, flags, method, request_id, _ = wire.HEADER.unpack(header)
        if length > self._recv_limit:
            raise ProtocolError(f"server sent a {length}-byte frame, over max_frame_size")
        payload = self._read_exact(length) if length else b""
        if payload is None:
            raise UnavailableError("connection ended inside a frame")
        return frame_type, flags, method, request_id, payload

    def _read_hello(self) -> frames_pb2.Hello:
        frame = self._read_frame()
        if frame is None:
            raise UnavailableError("server closed the connection before HELLO")
        frame_type, _, _, _, payload = frame
        return wire.check_hello(frame_type, payload)

    def _read_auth_answer(self) -> Principal:
        while True:
            frame = self._read_frame()
            if frame is None:
                raise UnavailableError("server closed the connection before answering AUTH")
            frame_type, _, _, _, payload = frame
            if frame_type == wire.PING:
                self._sendall(wire.encode_frame(wire.PONG, payload[: wire.MAX_PING_PAYLOAD]))
            principal = wire.auth_answer(frame_type, payload)
            if principal is not None:
                return principal

    def authenticate(self, token: str, timeout: Optional[float]) -> Principal:
        """Send AUTH with ``token`` and wait for the server's answer."""
        frame = wire.encode_auth(token)
        waiter: Future[Principal] = Future()
        with self._auth_lock:  # AUTH frames go out in the order of _auth_waiters, which their answers follow
            with self._lock:
                if self.closed is not None:
                    raise wire.fresh(self.closed)
                self._auth_waiters.append(waiter)
            try:
                self._send(frame)
            except OSError as exc:
                with self._lock:
                    if waiter in self._auth_waiters:
                        self._auth_waiters.remove(waiter)
                raise UnavailableError(f"could not send AUTH: {exc}") from exc
        try:
            return waiter.result(timeout)
        except FutureTimeout:
            raise DeadlineExceededError(f"no answer to AUTH within {timeout} s") from None

    def close(self, error: InferWireError) -> None:
        """Fail what is in flight with ``error`` and close the connection."""
        self._shutdown(error)
        if self.tls is not None:
            self.tls.close_notify()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # the reader thread reads the end of the stream and closes
        except OSError:
            pass
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=5)
        self._close_socket()

    def _close_socket(self) -> None:
        with self._send_lock:  # not under a sender: its socket's file descriptor must not be reused meanwhile
            self._sock.close()
        self._reader.close()  # a socket's makefile() holds its file descriptor open until it is closed too

    def _shutdown(self, error: InferWireError, in_flight: Optional[InferWireError] = None) -> None:
        """Take no new calls (``error`` says why) and fail the calls in flight with ``in_flight`` (or ``error``)."""
        with self._lock:
            if self.closed is None:
                self.closed = error
            pending, self.pending = self.pending, {}
            waiters = list(self._auth_waiters)
            self._auth_waiters.clear()
        for entry in pending.values():
            if not entry.cancelled:
                entry.future.set_exception(in_flight or error)
        for waiter in waiters:
            waiter.set_exception(error)
        self._slots.release(self._limit)

    # -- reading ----------------------------------------------------------------

    def _read_loop(self) -> None:
        error: InferWireError = UnavailableError("server closed the connection")
        in_flight: Optional[InferWireError] = None
        try:
            while True:
                frame = self._read_frame()
                if frame is None:
                    in_flight = wire.in_flight_error(self.goaway)
                    break
                self._dispatch(*frame)
        except InferWireError as exc:
            error = exc
        except (OSError, ValueError) as exc:  # socket closed under us
            error = UnavailableError(f"connection lost: {exc}")
        self._shutdown(error, in_flight)
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a sender blocked on a full socket
        except OSError:
            pass
        self._close_socket()

    def _dispatch(self, frame_type: int, flags: int, method: int, request_id: int, payload: bytes) -> None:
        if frame_type in (wire.RESPONSE, wire.ERROR):
            with self._lock:
                entry = self.pending.pop(request_id, None)
            if entry is None:
                return  # not ours (already failed locally); nothing waits for it
            self._slots.release()
            if entry.cancelled:
                return
            if frame_type == wire.ERROR and self.goaway is not None:
                entry.future.set_exception(wire.refused_after_goaway(wire.error_from_status(payload)))
                return
            try:
                entry.future.set_result(decode_answer(entry.call, frame_type, flags, payload, self.max_frame_size))
            except InferWireError as exc:
                entry.future.set_exception(exc)
        elif frame_type == wire.PING:
            self._send(wire.encode_frame(wire.PONG, payload[: wire.MAX_PING_PAYLOAD]))
        elif frame_type == wire.AUTH:
            principal = wire.parse_authenticated(payload)
            with self._lock:
                self.principal = principal
                waiter = self._auth_waiters.popleft() if self._auth_waiters else None
            if waiter is not None:
                waiter.set_result(principal)
        elif frame_type == wire.GOAWAY:
            goaway = wire.parse_goaway(payload)
            with self._lock:
                self.goaway = goaway
                if self.closed is None:
                    self.closed = wire.goaway_error(goaway)
                waiters: List[Future[Principal]] = []
                if goaway.code != wire.StatusCode.UNAVAILABLE:
                    waiters, self._auth_waiters = list(self._auth_waiters), deque()
            self._slots.release(self._limit)  # callers waiting for a slot go to a new connection
            for waiter in waiters:  # e.g. UNAUTHENTICATED, saying which check the new credentials failed
                waiter.set_exception(error_for(goaway.code, goaway.message))
            if goaway.code != wire.StatusCode.UNAVAILABLE:
                raise wire.goaway_error(goaway)
        # PONG, HELLO again, and unknown frame types are ignored (section 9).

    # -- sending ----------------------------------------------------------------

    def _send(self, frame: bytes) -> None:
        with self._send_lock:
            self._sendall(frame)

    def invoke(
        self, call: Call[Any, T], payload: bytes, *, deadline: Optional[float], timeout: Optional[float],
        compress: bool,
    ) -> T:
        """Send ``call`` and wait for its answer.

        Raises ``NotExecuted`` for a call the server never executed: not sent because the
        connection stopped taking calls first, or refused after the server's GOAWAY.
        """
        compress = compress and self.hello.compression
        if not self._slots.acquire(timeout=-1 if deadline is None else max(0.0, deadline - time.monotonic())):
            raise DeadlineExceededError("deadline passed waiting for a free request slot on the connection")
        entry = _Pending(call)
        with self._lock:
            if self.closed is not None:
                self._slots.release()
                raise wire.NotExecuted(self.closed)
            request_id = self._allocate_id()
            self.pending[request_id] = entry
        remaining = None if deadline is None else deadline - time.monotonic()
        try:
            frame = wire.encode_request(
                call.method, request_id, payload, timeout=remaining, compress=compress,
                max_frame_size=self.max_frame_size,
            )
            with self._send_lock:
                # GOAWAY or the end of the stream may have come since the call took its id: then it is not sent.
                closed = self.closed
                if closed is None:
                    self._sendall(frame)
            if closed is not None:
                raise wire.NotExecuted(closed)
        except BaseException as exc:
            with self._lock:
                lost = self.pending.pop(request_id, None)
            if lost is not None:
                self._slots.release()
            if isinstance(exc, OSError):
                raise UnavailableError(f"could not send request: {exc}") from exc
            raise

        try:
            return entry.future.result(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            self._cancel(request_id, entry)
            if entry.future.done():  # the answer won the race with the timer
                return entry.future.result()
            raise DeadlineExceededError(f"no answer within {timeout} s; request cancelled") from None

    def _allocate_id(self) -> int:
        """Next request id, wrapping 2**32-1 -> 1 and skipping ids still in flight (call with the lock)."""
        while True:
            self._next_id = self._next_id % wire.MAX_REQUEST_ID + 1
            if self._next_id not in self.pending:
                return self._next_id

    def _cancel(self, request_id: int, entry: _Pending[Any]) -> None:
        """Send CANCEL; the id stays reserved until the server's final frame for it arrives."""
        with self._lock:
            if self.pending.get(request_id) is not entry or entry.future.done():
                return
            entry.cancelled = True
        try:
            self._send(wire.encode_frame(wire.CANCEL, request_id=request_id))
        except OSError:
            pass


class _Calls:
    """The call methods of the blocking clients, each a thin wrapper over ``_invoke``, which sends one
    call and waits for its answer (over one connection, or balanced across several)."""

    # -- inference service ------------------------------------------------------

    def infer(
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
        return self._invoke(call, timeout=timeout, compress=compress)

    def server_live(self, *, timeout: Optional[float] = None, compress: Optional[bool] = None) -> bool:
        """Whether the server is live."""
        return self._invoke(api.server_live(), timeout=timeout, compress=compress)

    def server_ready(self, *, timeout: Optional[float] = None, compress: Optional[bool] = None) -> bool:
        """Whether the server is ready: not shutting down and every model has a version serving."""
        return self._invoke(api.server_ready(), timeout=timeout, compress=compress)

    def server_not_ready_reasons(
        self, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> List[str]:
        """Why the server is not ready, one sentence per reason (shutting down, a model with no
        version serving, a version that failed to load); empty when it is ready."""
        return self._invoke(api.server_not_ready_reasons(), timeout=timeout, compress=compress)

    def server_metadata(
        self, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> inference_pb2.ServerMetadataResponse:
        """The server's name, version, protocol versions and extensions."""
        return self._invoke(api.server_metadata(), timeout=timeout, compress=compress)

    def model_ready(
        self, model: str, version: Version = None, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> bool:
        """Whether ``model`` (at ``version``) is ready; ``False`` for unknown models."""
        return self._invoke(api.model_ready(model, version), timeout=timeout, compress=compress)

    def model_metadata(
        self, model: str, version: Version = None, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> inference_pb2.ModelMetadataResponse:
        """Versions, platform, input and output specs and ``max_batch_size`` of ``model``."""
        return self._invoke(api.model_metadata(model, version), timeout=timeout, compress=compress)

    def model_statistics(
        self, model: str = "", *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> List[inference_pb2.VersionStatistics]:
        """Per-version request, execution and timing statistics (every model when ``model`` is empty)."""
        return self._invoke(api.model_statistics(model), timeout=timeout, compress=compress)

    # -- management service -----------------------------------------------------

    def list_models(
        self, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> List[management_pb2.ModelStatus]:
        """Every model's status: versions, their states, and the rollout."""
        return self._invoke(api.list_models(), timeout=timeout, compress=compress)

    def model_status(
        self, model: str, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> management_pb2.ModelStatus:
        """One model's versions (state, counts, mean compute time) and rollout."""
        return self._invoke(api.model_status(model), timeout=timeout, compress=compress)

    def load_model(
        self, model: str, version: int, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> management_pb2.VersionStatus:
        """Load ``version`` of ``model``; answers once it is READY or FAILED."""
        return self._invoke(api.load_model(model, version), timeout=timeout, compress=compress)

    def unload_model(
        self, model: str, version: int, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> management_pb2.VersionStatus:
        """Unload ``version`` of ``model`` once its queued and running requests have finished."""
        return self._invoke(api.unload_model(model, version), timeout=timeout, compress=compress)

    def set_traffic(
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
        return self._invoke(call, timeout=timeout, compress=compress)

    def promote(
        self, model: str, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> management_pb2.Rollout:
        """Make the canary the stable version (the old stable stays loaded for rollback)."""
        return self._invoke(api.promote(model), timeout=timeout, compress=compress)

    def rollback(
        self, model: str, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> management_pb2.Rollout:
        """Withdraw the canary, or else restore the previous stable version."""
        return self._invoke(api.rollback(model), timeout=timeout, compress=compress)

    def set_shadow(
        self, model: str, version: int, percent: int, *, timeout: Optional[float] = None,
        compress: Optional[bool] = None,
    ) -> management_pb2.Rollout:
        """Mirror ``percent`` % of stable's unlabelled requests to ``version`` (0 stops shadowing)."""
        return self._invoke(api.set_shadow(model, version, percent), timeout=timeout, compress=compress)

    def history(
        self, model: str, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> List[management_pb2.HistoryEntry]:
        """Who changed what about ``model``'s versions and rollout, and when."""
        return self._invoke(api.history(model), timeout=timeout, compress=compress)

    # -- sending ----------------------------------------------------------------

    def _invoke(self, call: Call[Any, T], *, timeout: Optional[float], compress: Optional[bool]) -> T:
        raise NotImplementedError


class Client(_Calls):
    """A blocking InferWire client.

    One instance holds one connection at a time; it is thread-safe, and concurrent
    calls from many threads are multiplexed on it and matched by request id. Use it
    as a context manager or call :meth:`close`.

    ``timeout`` is the default per-call deadline in seconds (``None``: none):
    it is sent to the server as the request's ``timeout_us`` and also enforced
    locally, cancelling the request with CANCEL when it passes.
    ``compression`` makes calls zlib-compress their requests and ask for
    compressed responses by default (when the server supports it).

    Every call method also takes keyword-only ``timeout`` and ``compress``,
    overriding those defaults for the one call (``None`` keeps the default).

    **TLS**: ``tls=True`` connects with TLS, verifying the server's certificate
    against the system's trust roots and the host name ``host`` (or
    ``server_hostname``); ``tls_ca`` (a PEM file) trusts that CA instead,
    ``tls_cert``/``tls_key`` (PEM files) present a client certificate, and either
    implies ``tls=True``. ``tls=`` also takes an ``ssl.SSLContext``, used as given
    (the client sets its ALPN protocols to ``inferwire/1``). A failed handshake
    raises :class:`~inferwire.TLSHandshakeError` saying why.

    **Authentication**: ``token`` is a bearer token (one from the server's token
    file, or a JWT), sent in an AUTH frame right after the preface; the
    constructor returns once the server accepted it, and :attr:`principal` says who
    the connection acts as. Credentials the server refuses raise
    :class:`~inferwire.UnauthenticatedError` with the server's reason. A server that
    requires authentication, connected to without a token and without a client
    certificate it knows, raises ``UnauthenticatedError`` too.

    ``connect_timeout`` bounds connecting: TCP, the TLS handshake, HELLO, AUTH.

    **Reconnection** (PROTOCOL.md section 5): once the connection has received
    GOAWAY (an idle timeout, the server shutting down) or closed, the next call
    opens a new one to the same address, with the same TLS settings and
    credentials, instead of failing; concurrent callers share that one reconnection.
    A call that never ran is retried once on the new connection: one not sent yet,
    or one the server refused with ``UNAVAILABLE`` after its GOAWAY. A call in
    flight when the connection closes without an answer raises ``UnavailableError``
    (it may have run; retrying it is the caller's choice). When reconnecting fails
    the call raises what connecting raised (``UnavailableError`` saying why for a
    server that cannot be reached), and the next call tries again. :meth:`close`
    ends reconnection for good. :attr:`connections_opened` counts the connections
    opened, :attr:`connected` says whether the current one still takes calls.
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
        self._context = _tls.make_context(tls, ca=tls_ca, cert=tls_cert, key=tls_key, server_hostname=server_hostname)
        self._server_hostname = server_hostname
        self._token = token  # the credentials connections open with: the last ones the server accepted
        self._lock = threading.Lock()
        self._closed: Optional[InferWireError] = None
        self._connecting: Optional[Future[_Connection]] = None
        self._retired: List[_Connection] = []  # earlier connections still answering calls sent on them
        self._conn = self._open(token)
        self._connections_opened = 1

    # -- connection lifecycle ---------------------------------------------------

    def _open(self, token: Optional[str]) -> _Connection:
        return _Connection(
            self.host, self.port, context=self._context, server_hostname=self._server_hostname, token=token,
            connect_timeout=self.connect_timeout,
        )

    @property
    def hello(self) -> frames_pb2.Hello:
        """The current connection's HELLO: limits, server name and version, whether authentication is required."""
        return self._conn.hello

    @property
    def principal(self) -> Optional[Principal]:
        """Who the current connection acts as: the answer to ``token`` (or :meth:`authenticate`), or the
        client certificate's principal from HELLO; None when the server has no authentication and no
        token was sent."""
        return self._conn.principal

    @property
    def max_frame_size(self) -> int:
        """The largest frame payload the server accepts (from the current connection's HELLO)."""
        return self._conn.max_frame_size

    @property
    def tls_version(self) -> Optional[str]:
        """The TLS version in use (e.g. ``"TLSv1.3"``), or None on a plaintext connection."""
        return self._conn.tls.tls.version() if self._conn.tls is not None else None

    @property
    def connections_opened(self) -> int:
        """How many connections this client has opened: 1 at first, one more per reconnection."""
        return self._connections_opened

    @property
    def connected(self) -> bool:
        """Whether the current connection takes calls: False once it has received GOAWAY or closed
        (the next call then reconnects) and after :meth:`close`."""
        return self._closed is None and self._conn.closed is None

    @property
    def _pending(self) -> Dict[int, _Pending[Any]]:
        return self._conn.pending

    @property
    def _tls(self) -> Optional[_TLSStream]:
        return self._conn.tls

    def _connection(self, deadline: Optional[float], token: Optional[str] = None) -> Tuple[_Connection, bool]:
        """The current connection, or a new one if it takes no calls; and whether it was opened with ``token``.

        One caller opens the new connection (presenting ``token``, else the client's
        credentials); the others wait for it (until ``deadline``) and get the same
        connection, or a copy of the same error.
        """
        with self._lock:
            if self._closed is not None:
                raise wire.fresh(self._closed)
            if self._conn.closed is None:
                return self._conn, False
            attempt = self._connecting
            leading = attempt is None
            if attempt is None:
                attempt = self._connecting = Future()
                presented = self._token if token is None else token
        if not leading:
            if not wait_futures([attempt], None if deadline is None else max(0.0, deadline - time.monotonic())).done:
                raise DeadlineExceededError("deadline passed waiting for the client to reconnect")
            failure = attempt.exception()
            if failure is not None:
                raise wire.fresh(failure) from failure.__cause__
            return attempt.result(), False

        try:
            try:
                conn = self._open(presented)
            except OSError as exc:  # refused, unreachable, timed out (TLS and protocol failures say more)
                raise wire.reconnect_error(exc, _tls.address(self.host, self.port), self.connect_timeout) from exc
        except BaseException as exc:
            with self._lock:
                self._connecting = None
            shared = exc if isinstance(exc, InferWireError) else UnavailableError(f"reconnecting failed: {exc!r}")
            attempt.set_exception(shared)
            raise
        with self._lock:
            self._connecting = None
            closed = self._closed_reason()  # close() may have come while connecting
            if closed is None:
                old, self._conn = self._conn, conn
                self._connections_opened += 1
                self._retired = [c for c in self._retired if c.thread.is_alive()]
                if old.thread.is_alive():
                    self._retired.append(old)
        if closed is not None:
            conn.close(closed)
            attempt.set_exception(closed)
            raise wire.fresh(closed)
        attempt.set_result(conn)
        if not old.pending:
            old.close(old.closed or UnavailableError("connection replaced"))  # nothing left to answer on it
        return conn, token is not None

    def _closed_reason(self) -> Optional[InferWireError]:
        return self._closed

    def authenticate(self, token: str, *, timeout: Optional[float] = None) -> Principal:
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
        deadline = None if timeout is None else time.monotonic() + timeout
        conn, opened_with_token = self._connection(deadline, token)
        if opened_with_token and conn.principal is not None:
            principal = conn.principal
        else:
            principal = conn.authenticate(token, None if deadline is None else max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._token = token
        return principal

    def close(self) -> None:
        """Close the connection for good: calls in flight and later calls fail with ``UnavailableError``."""
        error = UnavailableError("client closed the connection")
        with self._lock:
            if self._closed is None:
                self._closed = error
            connections, self._retired = [self._conn, *self._retired], []
        for conn in connections:
            conn.close(error)

    def __enter__(self) -> "Client":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    # -- sending ----------------------------------------------------------------

    def _invoke(self, call: Call[Any, T], *, timeout: Optional[float], compress: Optional[bool]) -> T:
        timeout = self.timeout if timeout is None else timeout
        compress = self.compression if compress is None else compress
        deadline = None if timeout is None else time.monotonic() + timeout
        payload = call.request.SerializeToString()
        retried = False
        while True:
            conn, _ = self._connection(deadline)
            try:
                return conn.invoke(call, payload, deadline=deadline, timeout=timeout, compress=compress)
            except wire.NotExecuted as not_executed:
                if retried:
                    raise wire.fresh(not_executed.error) from None
                retried = True  # never ran: once more, on a new connection


# -- balancing across a fleet ---------------------------------------------------------------------


class _BlockingEndpoint(_balance.Endpoint[Client]):
    """An endpoint of a :class:`BalancedClient`: its :class:`Client`, made when it first connects."""

    def __init__(self, address: Address) -> None:
        super().__init__(address)
        self.opening = threading.Lock()  # one thread makes the first connection; the others wait for it


class BalancedClient(_Calls):
    """A blocking client for a fleet of servers: one connection per server, each call sent to one.

    ``endpoints`` is a list of ``"host:port"`` strings (``"[::1]:8500"`` for IPv6; ``(host,
    port)`` tuples too), or a DNS name whose addresses are the servers,
    ``"dns:///inferwire.internal:8500"``, resolved with getaddrinfo on construction
    (raising ``UnavailableError`` if it does not resolve) and again every
    ``resolve_interval`` seconds, in the background of a call: a new address gets an
    endpoint, an endpoint whose address is gone is closed once its calls have finished.
    Connections open on first use, each a :class:`Client` (so it reconnects after GOAWAY or
    loss as ``Client`` does); ``timeout``, ``compression``, ``connect_timeout``, the TLS
    arguments and ``token`` are as for ``Client`` and apply to every endpoint. With TLS, a
    DNS target's name is the host name verified (unless ``server_hostname`` says another).

    **Choosing**: each attempt goes to the less loaded of two endpoints drawn at random
    (power of two choices), by calls outstanding from this client. Endpoints that failed to
    connect are skipped for ``backoff`` seconds, doubling with each failure in a row up to
    ``max_backoff``; when every endpoint is skipped, a call raises ``UnavailableError``
    naming each one's failure.

    **Retrying** (at most ``max_attempts`` attempts per call, each on an endpoint the call
    has not tried while there is one, and none started after the call's deadline): a call
    that was not sent (connecting failed, or the connection had received GOAWAY or ended)
    goes to another endpoint. Once sent, a management call (``list_models``, ``load_model``,
    ... ``history``) is never sent again. An inference call (``infer`` and the read-only
    calls) goes to another endpoint when the server answered ``UNAVAILABLE`` — which a
    server answers only before executing a request — and, unless ``retry_inference=False``,
    when its connection ended without an answer (it may have run; inference can run twice
    safely). A call that is not retried raises what its last attempt raised.

    ``clock`` (a monotonic clock in seconds), ``rng`` (a ``random.Random``) and
    ``resolver`` (``(name, port) -> [(address, port), ...]``) replace ``time.monotonic``,
    a new ``random.Random()`` and getaddrinfo, e.g. in tests. :attr:`endpoints` says how
    each endpoint stands, :attr:`retries` counts attempts after a call's first.
    Thread-safe; use it as a context manager or call :meth:`close`.
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
        # One context for every endpoint: certificate files are read once, bad arguments raise here.
        self._context = _tls.make_context(tls, ca=tls_ca, cert=tls_cert, key=tls_key, server_hostname=server_hostname)
        if server_hostname is None and self._context is not None and target.dns is not None:
            server_hostname = target.dns[0]
        self._server_hostname = server_hostname
        if token is not None:
            wire.encode_auth(token)  # TypeError, ValueError
        self._token = token
        self._clock = clock
        self._resolver = resolver or _balance.resolve
        self._lock = threading.Lock()
        self._pool = _balance.Pool(
            target, _BlockingEndpoint, clock=clock, rng=rng or random.Random(), backoff=backoff,
            max_backoff=max_backoff, resolve_interval=resolve_interval,
        )
        if target.dns is not None:
            self._pool.resolving = True
            self._apply(self._resolve(target.dns, raising=True))

    # -- the fleet ------------------------------------------------------------------------------

    @property
    def endpoints(self) -> Tuple[EndpointStatus, ...]:
        """Each endpoint as it stands: address, calls outstanding, attempts, connected, back-off."""
        with self._lock:
            return self._pool.status(lambda endpoint: endpoint.client is not None and endpoint.client.connected)

    @property
    def retries(self) -> int:
        """Attempts made after a call's first attempt failed, over the client's life."""
        with self._lock:
            return self._pool.retries

    def refresh(self) -> None:
        """Resolve a DNS target again now and update the endpoints (with a list of endpoints: nothing).

        Raises ``UnavailableError`` if the name does not resolve; the endpoints then stay.
        """
        dns = self._pool.target.dns
        if dns is not None:
            self._apply(self._resolve(dns, raising=True))

    def _resolve(self, dns: Address, *, raising: bool) -> Optional[List[Address]]:
        try:
            addresses = self._resolver(*dns)
        except Exception as exc:  # noqa: BLE001 -- socket.gaierror, or whatever a given resolver raises
            if raising:
                raise _balance.resolve_error(dns, exc) from exc
            return None
        if not addresses and raising:
            raise UnavailableError(f"{_balance.display(dns)} resolves to no address")
        return addresses

    def _apply(self, addresses: Optional[List[Address]]) -> None:
        with self._lock:
            leaving = self._pool.resolved(addresses)
        self._close_endpoints(leaving)

    def _resolve_in_background(self) -> None:
        dns = self._pool.target.dns
        assert dns is not None
        self._apply(self._resolve(dns, raising=False))

    def _close_endpoints(self, endpoints: Sequence[_BlockingEndpoint]) -> None:
        for endpoint in endpoints:
            if endpoint.client is not None:
                endpoint.client.close()

    def close(self) -> None:
        """Close every connection for good: calls in flight and later calls fail with ``UnavailableError``."""
        with self._lock:
            endpoints = self._pool.close(UnavailableError("client closed"))
        self._close_endpoints(endpoints)

    def __enter__(self) -> "BalancedClient":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    # -- sending ----------------------------------------------------------------------------------

    def _invoke(self, call: Call[Any, T], *, timeout: Optional[float], compress: Optional[bool]) -> T:
        timeout = self.timeout if timeout is None else timeout
        compress = self.compression if compress is None else compress
        deadline = None if timeout is None else self._clock() + timeout
        payload = call.request.SerializeToString()
        tried: List[_BlockingEndpoint] = []
        while True:
            with self._lock:
                if self._pool.resolution_due():
                    threading.Thread(target=self._resolve_in_background, name="inferwire-resolve", daemon=True).start()
                endpoint = self._pool.pick(tried)
            tried.append(endpoint)
            try:
                return self._attempt(endpoint, call, payload, deadline, timeout, compress)
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
                with self._lock:
                    leaving = self._pool.release(endpoint)
                if leaving:
                    self._close_endpoints([endpoint])

    def _attempt(
        self, endpoint: _BlockingEndpoint, call: Call[Any, T], payload: bytes, deadline: Optional[float],
        timeout: Optional[float], compress: bool,
    ) -> T:
        # A connection's waits are on time.monotonic; the call's deadline is on self._clock.
        local = None if deadline is None else time.monotonic() + (deadline - self._clock())
        conn = self._connect(endpoint, local)
        return conn.invoke(call, payload, deadline=local, timeout=timeout, compress=compress)

    def _connect(self, endpoint: _BlockingEndpoint, deadline: Optional[float]) -> _Connection:
        """``endpoint``'s connection, opened if need be; raises ``NotExecuted`` if that fails."""
        failure = _balance.recent_failure(endpoint, self._clock())
        if failure is not None:  # it failed since this call picked it: no second attempt within its back-off
            raise wire.NotExecuted(failure)
        try:
            client = endpoint.client or self._first_client(endpoint, deadline)
            conn, _ = client._connection(deadline)
        except DeadlineExceededError:
            raise
        except InferWireError as exc:
            error = exc
        except OSError as exc:
            error = wire.reconnect_error(exc, endpoint.where, self.connect_timeout)
        else:
            if endpoint.connect_failures:
                with self._lock:
                    self._pool.connected(endpoint)
            return conn
        with self._lock:
            self._pool.connect_failed(endpoint, error)
        raise wire.NotExecuted(error)

    def _first_client(self, endpoint: _BlockingEndpoint, deadline: Optional[float]) -> Client:
        """Connect to ``endpoint`` for the first time; threads that come meanwhile share the outcome."""
        failed_before = endpoint.failed_connects
        wait = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not endpoint.opening.acquire(timeout=wait):
            raise DeadlineExceededError(f"deadline passed waiting for the connection to {endpoint.where}")
        try:
            if endpoint.client is not None:
                return endpoint.client
            # The attempt this thread waited for failed (with no back-off, failed_connects says so).
            failure = _balance.recent_failure(endpoint, self._clock())
            if failure is None and endpoint.failed_connects != failed_before and endpoint.last_error is not None:
                failure = wire.fresh(endpoint.last_error)
            if failure is not None:
                raise failure
            host, port = endpoint.address
            try:
                client = Client(
                    host, port, timeout=self.timeout, compression=self.compression,
                    connect_timeout=self.connect_timeout, tls=self._context, server_hostname=self._server_hostname,
                    token=self._token,
                )
            except InferWireError as exc:  # refused by the server (TLS, credentials, a connection limit)
                self._first_connect_failed(endpoint, exc)
                raise
            except OSError as exc:  # refused, unreachable, timed out
                error = wire.reconnect_error(exc, endpoint.where, self.connect_timeout, verb="connect")
                self._first_connect_failed(endpoint, error)
                raise error from exc
            with self._lock:
                leaving = endpoint.removed
                if not leaving:
                    endpoint.client = client
            if leaving:
                client.close()
                raise UnavailableError(f"{endpoint.where} left the endpoints while connecting")
            return client
        finally:
            endpoint.opening.release()

    def _first_connect_failed(self, endpoint: _BlockingEndpoint, error: InferWireError) -> None:
        """Record the failure (and start the back-off) before the threads waiting on ``endpoint.opening``
        look: they share it."""
        with self._lock:
            endpoint.failed_connects += 1
            self._pool.connect_failed(endpoint, error)
