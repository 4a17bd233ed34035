"""Frame layout, connection-level constants and reconnection rules (PROTOCOL.md sections 1-5).

Everything here is independent of how bytes move, so that the blocking and the
asyncio client share it.
"""

from __future__ import annotations

import copy
import os
import socket
import struct
import zlib
from typing import Optional, TypeVar

from ._proto import frames_pb2, status_pb2
from ._api import Principal
from .errors import InferWireError, ProtocolError, ResourceExhaustedError, UnauthenticatedError, error_for

MAGIC = b"IWIR"
MIN_VERSION = 1
MAX_VERSION = 1
PREFACE = MAGIC + struct.pack(">HH", MIN_VERSION, MAX_VERSION)

# length, type, flags, method, request_id, timeout_us -- all big-endian.
HEADER = struct.Struct(">IBBHII")
HEADER_SIZE = HEADER.size  # 16

HELLO = 0x01
REQUEST = 0x02
RESPONSE = 0x03
ERROR = 0x04
CANCEL = 0x05
PING = 0x06
PONG = 0x07
GOAWAY = 0x08
AUTH = 0x09

FLAG_COMPRESSED = 0x01
FLAG_COMPRESS_RESPONSE = 0x02

DEFAULT_MAX_FRAME_SIZE = 64 << 20
DEFAULT_MAX_CONCURRENT = 1024
MAX_TIMEOUT_US = 0xFFFFFFFF
MAX_REQUEST_ID = 0xFFFFFFFF
MAX_PING_PAYLOAD = 64

StatusCode = status_pb2.StatusCode


def encode_frame(
    frame_type: int,
    payload: bytes = b"",
    *,
    flags: int = 0,
    method: int = 0,
    request_id: int = 0,
    timeout_us: int = 0,
) -> bytes:
    """One frame: the 16-byte header followed by ``payload``."""
    return HEADER.pack(len(payload), frame_type, flags, method, request_id, timeout_us) + payload


def encode_request(
    method: int,
    request_id: int,
    payload: bytes,
    *,
    timeout: Optional[float],
    compress: bool,
    max_frame_size: int,
) -> bytes:
    """A REQUEST frame; compresses the payload and asks for compressed answers when ``compress``."""
    flags = 0
    if compress:
        flags |= FLAG_COMPRESS_RESPONSE
        if payload:
            payload = zlib.compress(payload)
            flags |= FLAG_COMPRESSED
    if len(payload) > max_frame_size:
        raise ResourceExhaustedError(
            f"request payload of {len(payload)} bytes exceeds the server's max_frame_size of {max_frame_size}"
        )
    return encode_frame(
        REQUEST, payload, flags=flags, method=method, request_id=request_id, timeout_us=timeout_to_us(timeout)
    )


def timeout_to_us(timeout: Optional[float]) -> int:
    """The header's ``timeout_us`` for a timeout in seconds (0: none; capped at the field's maximum)."""
    if timeout is None:
        return 0
    if timeout <= 0:
        return 1  # already expired: the smallest deadline the field can say
    return min(MAX_TIMEOUT_US, max(1, int(timeout * 1_000_000)))


def inflate(payload: bytes, limit: int) -> bytes:
    """Inflate a zlib payload, refusing to grow it past ``limit`` bytes."""
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(payload, limit)
    except zlib.error as exc:
        raise ProtocolError(f"compressed payload is not valid zlib: {exc}") from None
    if inflater.unconsumed_tail:
        raise ResourceExhaustedError(f"compressed payload inflates past {limit} bytes")
    if not inflater.eof:
        raise ProtocolError("compressed payload is truncated")
    return data


def parse_hello(payload: bytes) -> frames_pb2.Hello:
    hello = frames_pb2.Hello()
    hello.ParseFromString(payload)
    return hello


def check_hello(frame_type: int, payload: bytes) -> frames_pb2.Hello:
    """The server's first frame, which must be HELLO; a GOAWAY there is the reason the connection failed."""
    if frame_type == GOAWAY:
        raise connect_goaway_error(payload)
    if frame_type != HELLO:
        raise ProtocolError(f"expected HELLO, got frame type {frame_type:#04x}")
    hello = parse_hello(payload)
    if not MIN_VERSION <= hello.version <= MAX_VERSION:
        raise ProtocolError(f"server chose protocol version {hello.version}")
    return hello


def encode_auth(token: str) -> bytes:
    """An AUTH frame presenting ``token`` as the connection's bearer token (PROTOCOL.md section 1b)."""
    if not isinstance(token, str):
        raise TypeError(f"token must be a str, not {type(token).__name__}")
    if not token:
        raise ValueError("token is empty")
    return encode_frame(AUTH, frames_pb2.Authenticate(bearer_token=token).SerializeToString())


def parse_authenticated(payload: bytes) -> Principal:
    """The principal in the server's AUTH frame (an ``Authenticated`` message)."""
    answer = frames_pb2.Authenticated()
    try:
        answer.ParseFromString(payload)
    except Exception:  # noqa: BLE001 -- protobuf's DecodeError and friends
        raise ProtocolError("AUTH frame with an unparseable Authenticated payload") from None
    return Principal.from_proto(answer.principal)


def auth_answer(frame_type: int, payload: bytes) -> Optional[Principal]:
    """While connecting, after HELLO, a frame read waiting for the answer to the client's AUTH.

    The principal for AUTH; raises for GOAWAY (the server's reason, e.g. UNAUTHENTICATED
    with which check failed) and for answers to requests, of which none was sent yet;
    None for frames to skip (the caller answers PING).
    """
    if frame_type == AUTH:
        return parse_authenticated(payload)
    if frame_type == GOAWAY:
        raise connect_goaway_error(payload)
    if frame_type in (RESPONSE, ERROR):
        raise ProtocolError(f"expected the server's AUTH answer, got frame type {frame_type:#04x}")
    return None


def connection_principal(
    hello: frames_pb2.Hello, authenticated: Optional[Principal], where: str
) -> Optional[Principal]:
    """Who the connection acts as once connected: the AUTH answer, else HELLO's (certificate) principal.

    Raises ``UnauthenticatedError`` when the server requires authentication and the
    connection has neither: every request would be refused.
    """
    if authenticated is not None:
        return authenticated
    if hello.HasField("principal"):
        return Principal.from_proto(hello.principal)
    if hello.authentication_required:
        raise UnauthenticatedError(
            f"the server at {where} requires authentication: pass token= (a token from its token file, "
            f"or a JWT), or present a client certificate whose common name its token file lists"
        )
    return None


#: Set on errors the server sent in an ERROR frame (see ``answered_by_server``).
_ANSWERED = "_inferwire_answered_by_server"


def error_from_status(payload: bytes) -> InferWireError:
    """The exception carried by an ERROR frame's ``Status`` payload."""
    status = status_pb2.Status()
    try:
        status.ParseFromString(payload)
    except Exception:  # noqa: BLE001 -- protobuf's DecodeError and friends
        return ProtocolError("ERROR frame with an unparseable Status payload")
    error = error_for(status.code, status.message)
    setattr(error, _ANSWERED, True)
    return error


def answered_by_server(error: BaseException) -> bool:
    """Whether ``error`` is the server's answer in an ERROR frame, not one the client raised itself.

    An ``UnavailableError`` the server sent means the request was not executed (see the
    balancing clients); one the client raised for a connection that ended with the call
    in flight means it may have run. (``fresh`` copies keep the mark.)
    """
    return bool(getattr(error, _ANSWERED, False))


def parse_goaway(payload: bytes) -> frames_pb2.GoAway:
    goaway = frames_pb2.GoAway()
    try:
        goaway.ParseFromString(payload)
    except Exception:  # noqa: BLE001
        goaway.code = StatusCode.UNAVAILABLE
        goaway.message = "GOAWAY with an unparseable payload"
    return goaway


def connect_goaway_error(payload: bytes) -> InferWireError:
    """A GOAWAY while connecting: the error for its code, with the server's message."""
    goaway = parse_goaway(payload)
    return error_for(goaway.code, goaway.message)


def goaway_error(goaway: frames_pb2.GoAway) -> InferWireError:
    """The error for requests left unanswered by a GOAWAY (safe to retry elsewhere)."""
    from .errors import UnavailableError

    name = StatusCode.Name(goaway.code) if goaway.code in StatusCode.values() else str(goaway.code)
    return UnavailableError(f"server sent GOAWAY ({name}): {goaway.message}")


# -- reconnecting (PROTOCOL.md section 5) -----------------------------------------------------


class NotExecuted(Exception):
    """A call the server never executed, raised inside the clients to retry it on a new connection.

    Either it was not sent (the connection had received GOAWAY or closed first) or the
    server answered it ERROR ``UNAVAILABLE`` after its own GOAWAY (``sent`` is then
    True). ``error`` is what the caller gets if the call is not retried. Never escapes a
    client.
    """

    def __init__(self, error: InferWireError, *, sent: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.sent = sent


def refused_after_goaway(error: InferWireError) -> BaseException:
    """What an ERROR answer read after the server's GOAWAY fails its call with.

    ``UNAVAILABLE`` there is the server refusing a REQUEST it read after its GOAWAY:
    it never ran, so the call is retried (``NotExecuted``); other errors are the answer.
    """
    return NotExecuted(error, sent=True) if error.code == StatusCode.UNAVAILABLE else error


E = TypeVar("E", bound=BaseException)


def fresh(error: E) -> E:
    """A copy of ``error`` to raise in one more thread or task (with the same cause).

    One exception object raised in several threads at once would collect all their
    tracebacks; each caller gets its own copy instead.
    """
    try:
        copied = copy.copy(error)
    except Exception:  # noqa: BLE001 -- an exception class that cannot be rebuilt from its args
        return error
    copied.__cause__ = error.__cause__
    copied.__traceback__ = None
    return copied


def in_flight_error(goaway: Optional[frames_pb2.GoAway]) -> InferWireError:
    """The error for calls still in flight when the server closed the connection (they may have run)."""
    from .errors import UnavailableError

    if goaway is None:
        return UnavailableError("server closed the connection with the call in flight (it may have run)")
    name = StatusCode.Name(goaway.code) if goaway.code in StatusCode.values() else str(goaway.code)
    return UnavailableError(
        f"server closed the connection after GOAWAY ({name}: {goaway.message}) without answering the call "
        f"(it may have run)"
    )


def reconnect_error(
    exc: BaseException, where: str, connect_timeout: float, *, verb: str = "reconnect"
) -> InferWireError:
    """The error for a reconnection that failed below the protocol: refused, unreachable, timed out.

    Says the same whichever client made the attempt (asyncio words a refused connection
    "Connect call failed"): ``could not reconnect to 10.0.0.5:8500: Connection refused``
    (``verb="connect"`` for a first connection).
    """
    from .errors import UnavailableError

    errno = getattr(exc, "errno", None)
    if isinstance(exc, (socket.timeout, TimeoutError)) or (not str(exc) and errno is None):
        reason = f"no answer within {connect_timeout:g} s"
    elif isinstance(errno, int) and errno > 0 and not isinstance(exc, socket.gaierror):
        reason = os.strerror(errno)
    else:
        reason = str(exc)
    return UnavailableError(f"could not {verb} to {where}: {reason}")
