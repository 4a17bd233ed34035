"""The blocking client: one TCP connection, many concurrent calls from any threads."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any, Dict, Generic, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar

from numpy.typing import ArrayLike

from . import _api as api
from . import _wire as wire
from ._api import Call, InferResult, ParameterValue, Version
from ._proto import frames_pb2, inference_pb2, management_pb2
from .errors import DeadlineExceededError, InferWireError, ProtocolError, UnavailableError, error_for

__all__ = ["Client"]

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


class Client:
    """A blocking InferWire client.

    One instance holds one connection; it is thread-safe, and concurrent calls
    from many threads are multiplexed on it and matched by request id. Use it
    as a context manager or call :meth:`close`.

    ``timeout`` is the default per-call deadline in seconds (``None``: none):
    it is sent to the server as the request's ``timeout_us`` and also enforced
    locally, cancelling the request with CANCEL when it passes.
    ``compression`` makes calls zlib-compress their requests and ask for
    compressed responses by default (when the server supports it).

    Every call method also takes keyword-only ``timeout`` and ``compress``,
    overriding those defaults for the one call (``None`` keeps the default).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: Optional[float] = None,
        compression: bool = False,
        connect_timeout: float = 10.0,
    ) -> None:
        self.timeout = timeout
        self.compression = compression
        self._recv_limit = wire.DEFAULT_MAX_FRAME_SIZE
        self._sock = socket.create_connection((host, port), timeout=connect_timeout)
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._reader = self._sock.makefile("rb")
            self._sock.sendall(wire.PREFACE)
            self.hello = self._read_hello()
            self._recv_limit = self.max_frame_size
            self._sock.settimeout(None)
        except BaseException:
            self._sock.close()
            raise
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pending: Dict[int, _Pending[Any]] = {}
        self._next_id = 0
        self._closed: Optional[InferWireError] = None
        self._slots = threading.BoundedSemaphore(self.hello.max_concurrent_requests or wire.DEFAULT_MAX_CONCURRENT)
        self._thread = threading.Thread(target=self._read_loop, name=f"inferwire-reader-{host}:{port}", daemon=True)
        self._thread.start()

    # -- connection lifecycle ---------------------------------------------------

    @property
    def max_frame_size(self) -> int:
        """The largest frame payload the server accepts (from its HELLO)."""
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
        if frame_type == wire.GOAWAY:
            goaway = wire.parse_goaway(payload)
            raise error_for(goaway.code, goaway.message)
        if frame_type != wire.HELLO:
            raise ProtocolError(f"expected HELLO, got frame type {frame_type:#04x}")
        hello = wire.parse_hello(payload)
        if not wire.MIN_VERSION <= hello.version <= wire.MAX_VERSION:
            raise ProtocolError(f"server chose protocol version {hello.version}")
        return hello

    def close(self) -> None:
        """Close the connection; calls still in flight fail with ``UnavailableError``."""
        self._shutdown(UnavailableError("client closed the connection"))
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> "Client":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    def _shutdown(self, error: InferWireError) -> None:
        """Refuse new calls with ``error`` and fail every call in flight with it."""
        with self._lock:
            if self._closed is None:
                self._closed = error
            pending, self._pending = self._pending, {}
        for entry in pending.values():
            self._slots.release()
            if not entry.cancelled:
                entry.future.set_exception(error)

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
        return self._invoke(call, timeout=timeout, compress=compress)

    def server_live(self, *, timeout: Optional[float] = None, compress: Optional[bool] = None) -> bool:
        """Whether the server is live."""
        return self._invoke(api.server_live(), timeout=timeout, compress=compress)

    def server_ready(self, *, timeout: Optional[float] = None, compress: Optional[bool] = None) -> bool:
        """Whether the server is ready: not shutting down and every model has a version serving."""
        return self._invoke(api.server_ready(), timeout=timeout, compress=compress)

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

    # -- reading ----------------------------------------------------------------

    def _read_loop(self) -> None:
        error: InferWireError = UnavailableError("server closed the connection")
        try:
            while True:
                frame = self._read_frame()
                if frame is None:
                    break
                self._dispatch(*frame)
        except InferWireError as exc:
            error = exc
        except (OSError, ValueError) as exc:  # socket closed under us
            error = UnavailableError(f"connection lost: {exc}")
        self._shutdown(error)

    def _dispatch(self, frame_type: int, flags: int, method: int, request_id: int, payload: bytes) -> None:
        if frame_type in (wire.RESPONSE, wire.ERROR):
            with self._lock:
                entry = self._pending.pop(request_id, None)
            if entry is None:
                return  # not ours (already failed locally); nothing waits for it
            self._slots.release()
            if entry.cancelled:
                return
            try:
                entry.future.set_result(decode_answer(entry.call, frame_type, flags, payload, self.max_frame_size))
            except InferWireError as exc:
                entry.future.set_exception(exc)
        elif frame_type == wire.PING:
            self._send(wire.encode_frame(wire.PONG, payload[: wire.MAX_PING_PAYLOAD]))
        elif frame_type == wire.GOAWAY:
            goaway = wire.parse_goaway(payload)
            with self._lock:
                if self._closed is None:
                    self._closed = wire.goaway_error(goaway)
            if goaway.code != wire.StatusCode.UNAVAILABLE:
                raise wire.goaway_error(goaway)
        # PONG, HELLO again, and unknown frame types are ignored (section 9).

    # -- sending ----------------------------------------------------------------

    def _send(self, frame: bytes) -> None:
        with self._send_lock:
            self._sock.sendall(frame)

    def _invoke(self, call: Call[Any, T], *, timeout: Optional[float], compress: Optional[bool]) -> T:
        timeout = self.timeout if timeout is None else timeout
        compress = (self.compression if compress is None else compress) and self.hello.compression
        deadline = None if timeout is None else time.monotonic() + timeout
        payload = call.request.SerializeToString()

        if not self._slots.acquire(timeout=-1 if deadline is None else max(0.0, deadline - time.monotonic())):
            raise DeadlineExceededError("deadline passed waiting for a free request slot on the connection")
        entry = _Pending(call)
        with self._lock:
            if self._closed is not None:
                self._slots.release()
                raise self._closed
            request_id = self._allocate_id()
            self._pending[request_id] = entry
        remaining = None if deadline is None else deadline - time.monotonic()
        try:
            frame = wire.encode_request(
                call.method, request_id, payload, timeout=remaining, compress=compress,
                max_frame_size=self.max_frame_size,
            )
            self._send(frame)
        except BaseException as exc:
            with self._lock:
                lost = self._pending.pop(request_id, None)
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
            if self._next_id not in self._pending:
                return self._next_id

    def _cancel(self, request_id: int, entry: _Pending[Any]) -> None:
        """Send CANCEL; the id stays reserved until the server's final frame for it arrives."""
        with self._lock:
            if self._pending.get(request_id) is not entry or entry.future.done():
                return
            entry.cancelled = True
        try:
            self._send(wire.encode_frame(wire.CANCEL, request_id=request_id))
        except OSError:
            pass
