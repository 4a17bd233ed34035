"""Typed exceptions for InferWire status codes (PROTOCOL.md section 7).

Each status code has its own subclass of :class:`InferWireError`, so callers can
``except inferwire.NotFoundError`` and need not compare codes. :func:`error_for`
picks the class for a code received from the server.
"""

from __future__ import annotations

from typing import Dict, Optional, Type

from ._proto import status_pb2

__all__ = [
    "InferWireError",
    "RequestCancelledError",
    "UnknownError",
    "InvalidArgumentError",
    "DeadlineExceededError",
    "NotFoundError",
    "AlreadyExistsError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "FailedPreconditionError",
    "AbortedError",
    "OutOfRangeError",
    "UnimplementedError",
    "InternalError",
    "UnavailableError",
    "DataLossError",
    "UnauthenticatedError",
    "ProtocolError",
    "TLSHandshakeError",
    "error_for",
]

StatusCode = status_pb2.StatusCode


class InferWireError(Exception):
    """A call failed. ``code`` is a ``StatusCode`` number, ``message`` is for people.

    Subclasses fix ``code`` for their status; ``InferWireError`` itself is raised
    only for codes this client does not know, with the received ``code``.
    """

    code: int = StatusCode.UNKNOWN

    def __init__(self, message: str, code: Optional[int] = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message

    @property
    def code_name(self) -> str:
        """The status code's name, e.g. ``"NOT_FOUND"``."""
        try:
            return StatusCode.Name(self.code)
        except ValueError:
            return str(self.code)

    def __str__(self) -> str:
        return f"{self.code_name}: {self.message}"


class RequestCancelledError(InferWireError):
    """The server answered that the call was cancelled (``CANCELLED``).

    Not named ``CancelledError`` so that it cannot shadow
    :class:`asyncio.CancelledError`, which is what cancelling the task awaiting an
    :class:`~inferwire.AsyncClient` call raises.
    """

    code = StatusCode.CANCELLED


class UnknownError(InferWireError):
    """The server failed without a more specific code (``UNKNOWN``)."""

    code = StatusCode.UNKNOWN


class InvalidArgumentError(InferWireError):
    """The request was malformed or did not match the model (``INVALID_ARGUMENT``)."""

    code = StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(InferWireError):
    """The call's deadline passed, on the server or locally (``DEADLINE_EXCEEDED``)."""

    code = StatusCode.DEADLINE_EXCEEDED


class NotFoundError(InferWireError):
    """Unknown model or version (``NOT_FOUND``)."""

    code = StatusCode.NOT_FOUND


class AlreadyExistsError(InferWireError):
    """What the call would create already exists (``ALREADY_EXISTS``)."""

    code = StatusCode.ALREADY_EXISTS


class PermissionDeniedError(InferWireError):
    """The caller may not make this call (``PERMISSION_DENIED``)."""

    code = StatusCode.PERMISSION_DENIED


class ResourceExhaustedError(InferWireError):
    """A queue, concurrency or size limit was hit (``RESOURCE_EXHAUSTED``)."""

    code = StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(InferWireError):
    """The server's state does not allow the call (``FAILED_PRECONDITION``)."""

    code = StatusCode.FAILED_PRECONDITION


class AbortedError(InferWireError):
    """The call was aborted (``ABORTED``)."""

    code = StatusCode.ABORTED


class OutOfRangeError(InferWireError):
    """A value was outside its valid range (``OUT_OF_RANGE``)."""

    code = StatusCode.OUT_OF_RANGE


class UnimplementedError(InferWireError):
    """The method is not implemented or is disabled (``UNIMPLEMENTED``)."""

    code = StatusCode.UNIMPLEMENTED


class InternalError(InferWireError):
    """The server or the model failed (``INTERNAL``)."""

    code = StatusCode.INTERNAL


class UnavailableError(InferWireError):
    """The server or connection is not available; safe to retry elsewhere (``UNAVAILABLE``)."""

    code = StatusCode.UNAVAILABLE


class DataLossError(InferWireError):
    """Data was lost or corrupted (``DATA_LOSS``)."""

    code = StatusCode.DATA_LOSS


class UnauthenticatedError(InferWireError):
    """The caller is not authenticated (``UNAUTHENTICATED``)."""

    code = StatusCode.UNAUTHENTICATED


class ProtocolError(UnavailableError):
    """The server sent bytes this client cannot make sense of; the connection is closed."""


class TLSHandshakeError(UnavailableError):
    """The TLS handshake failed, so no connection was made; the message says why.

    For example the server's certificate did not verify (untrusted CA, another host
    name, expired), the server required or refused a client certificate, or the port
    does not speak TLS. Raised by the clients' constructors and ``connect``; the
    ``ssl`` exception that caused it is its ``__cause__``.
    """


_BY_CODE: Dict[int, Type[InferWireError]] = {
    cls.code: cls
    for cls in (
        RequestCancelledError, UnknownError, InvalidArgumentError, DeadlineExceededError, NotFoundError,
        AlreadyExistsError, PermissionDeniedError, ResourceExhaustedError, FailedPreconditionError,
        AbortedError, OutOfRangeError, UnimplementedError, InternalError, UnavailableError,
        DataLossError, UnauthenticatedError,
    )
}


def error_for(code: int, message: str) -> InferWireError:
    """Build the exception matching ``code`` (``InferWireError`` for unknown codes)."""
    cls = _BY_CODE.get(code)
    return cls(message) if cls is not None else InferWireError(message, code)
