"""Typed exceptions for InferWire status codes (PROTOCOL.md section 7)."""

from __future__ import annotations

from typing import Dict, Type

from ._proto import status_pb2

__all__ = [
    "InferWireError",
    "CancelledError",
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
    "error_for",
]

StatusCode = status_pb2.StatusCode


class InferWireError(Exception):
    """A call failed. ``code`` is a ``StatusCode`` number, ``message`` is for people."""

    code: int = StatusCode.UNKNOWN

    def __init__(self, message: str, code: int | None = None) -> None:
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


def _subclass(name: str, code: int, doc: str) -> Type[InferWireError]:
    return type(name, (InferWireError,), {"code": code, "__doc__": doc, "__module__": __name__})


CancelledError = _subclass("CancelledError", StatusCode.CANCELLED, "The call was cancelled.")
UnknownError = _subclass("UnknownError", StatusCode.UNKNOWN, "An unknown error.")
InvalidArgumentError = _subclass(
    "InvalidArgumentError", StatusCode.INVALID_ARGUMENT, "The request was malformed or did not match the model."
)
DeadlineExceededError = _subclass(
    "DeadlineExceededError", StatusCode.DEADLINE_EXCEEDED, "The call's deadline passed (on the server or locally)."
)
NotFoundError = _subclass("NotFoundError", StatusCode.NOT_FOUND, "Unknown model or version.")
AlreadyExistsError = _subclass("AlreadyExistsError", StatusCode.ALREADY_EXISTS, "Already exists.")
PermissionDeniedError = _subclass("PermissionDeniedError", StatusCode.PERMISSION_DENIED, "Permission denied.")
ResourceExhaustedError = _subclass(
    "ResourceExhaustedError", StatusCode.RESOURCE_EXHAUSTED, "A queue, concurrency or size limit was hit."
)
FailedPreconditionError = _subclass(
    "FailedPreconditionError", StatusCode.FAILED_PRECONDITION, "The server's state does not allow the call."
)
AbortedError = _subclass("AbortedError", StatusCode.ABORTED, "Aborted.")
OutOfRangeError = _subclass("OutOfRangeError", StatusCode.OUT_OF_RANGE, "Out of range.")
UnimplementedError = _subclass("UnimplementedError", StatusCode.UNIMPLEMENTED, "Method not implemented or disabled.")
InternalError = _subclass("InternalError", StatusCode.INTERNAL, "The server or the model failed.")
UnavailableError = _subclass(
    "UnavailableError", StatusCode.UNAVAILABLE, "The server or connection is not available; safe to retry elsewhere."
)
DataLossError = _subclass("DataLossError", StatusCode.DATA_LOSS, "Data loss.")
UnauthenticatedError = _subclass("UnauthenticatedError", StatusCode.UNAUTHENTICATED, "Unauthenticated.")


class ProtocolError(UnavailableError):
    """The server sent bytes this client cannot make sense of; the connection is closed."""


_BY_CODE: Dict[int, Type[InferWireError]] = {
    cls.code: cls
    for cls in (
        CancelledError, UnknownError, InvalidArgumentError, DeadlineExceededError, NotFoundError,
        AlreadyExistsError, PermissionDeniedError, ResourceExhaustedError, FailedPreconditionError,
        AbortedError, OutOfRangeError, UnimplementedError, InternalError, UnavailableError,
        DataLossError, UnauthenticatedError,
    )
}


def error_for(code: int, message: str) -> InferWireError:
    """Build the exception matching ``code`` (``InferWireError`` for unknown codes)."""
    cls = _BY_CODE.get(code)
    return cls(message) if cls is not None else InferWireError(message, code)
