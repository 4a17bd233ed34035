"""The public API's shape: coroutine methods, exception classes, and what type checkers see.

None of these need a server.
"""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import inferwire
from inferwire import errors


def public_methods(cls: type) -> dict:
    """Public functions of ``cls`` (inherited ones too) by name; properties left out."""
    methods = {}
    for klass in reversed(cls.__mro__[:-1]):
        for name, value in vars(klass).items():
            if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, classmethod)):
                methods[name] = getattr(cls, name)
    return methods


def test_every_public_async_client_method_is_a_coroutine_function():
    methods = public_methods(inferwire.AsyncClient)
    assert {"connect", "open", "close", "infer", "server_live", "history", "authenticate"} <= set(methods)
    not_coroutines = sorted(name for name, method in methods.items() if not inspect.iscoroutinefunction(method))
    assert not_coroutines == []
    assert inspect.iscoroutinefunction(inferwire.AsyncClient.__aenter__)
    assert inspect.iscoroutinefunction(inferwire.AsyncClient.__aexit__)


def test_async_client_mirrors_client():
    # The two clients declare their call methods separately; they must not drift apart.
    blocking = public_methods(inferwire.Client)
    asynchronous = public_methods(inferwire.AsyncClient)
    assert set(blocking) <= set(asynchronous)
    for name, method in blocking.items():
        assert inspect.signature(asynchronous[name]) == inspect.signature(method), name
        assert asynchronous[name].__doc__ == method.__doc__, name
        assert not inspect.iscoroutinefunction(method), name


def test_clients_take_the_same_connection_arguments():
    blocking = inspect.signature(inferwire.Client.__init__)
    assert inspect.signature(inferwire.AsyncClient.__init__) == blocking
    connect = inspect.signature(inferwire.AsyncClient.connect)
    assert list(connect.parameters.values()) == list(blocking.parameters.values())[1:]  # less self
    assert {"tls", "tls_ca", "tls_cert", "tls_key", "server_hostname", "token"} <= set(blocking.parameters)


def test_balanced_clients_offer_every_call_of_the_clients():
    # The call methods are written once per flavour (client._Calls, aio._AsyncCalls) and shared.
    for single, balanced in ((inferwire.Client, inferwire.BalancedClient),
                             (inferwire.AsyncClient, inferwire.AsyncBalancedClient)):
        calls = {name: method for name, method in public_methods(single).items()
                 if name not in ("connect", "open", "close", "authenticate")}
        assert {"infer", "server_live", "model_statistics", "list_models", "history"} <= set(calls)
        offered = public_methods(balanced)
        for name, method in calls.items():
            assert offered[name] is method, name
    asynchronous = public_methods(inferwire.AsyncBalancedClient)
    assert not [name for name, method in asynchronous.items() if not inspect.iscoroutinefunction(method)]
    assert inspect.iscoroutinefunction(inferwire.AsyncBalancedClient.__aenter__)
    assert inferwire.AsyncBalancedClient is inferwire.aio.BalancedClient
    blocking = inspect.signature(inferwire.BalancedClient.__init__)
    assert inspect.signature(inferwire.AsyncBalancedClient.__init__) == blocking
    connect = inspect.signature(inferwire.AsyncBalancedClient.connect)
    assert list(connect.parameters.values()) == list(blocking.parameters.values())[1:]  # less self
    # The connection arguments are the single clients', in the same order.
    single = list(inspect.signature(inferwire.Client.__init__).parameters.values())[3:]  # less self, host, port
    assert list(blocking.parameters.values())[2:2 + len(single)] == single


def test_every_public_method_is_annotated():
    for cls in (inferwire.Client, inferwire.AsyncClient, inferwire.BalancedClient, inferwire.AsyncBalancedClient):
        for name, method in public_methods(cls).items():
            signature = inspect.signature(method)
            assert signature.return_annotation is not inspect.Signature.empty, f"{cls.__name__}.{name}"
            for parameter in signature.parameters.values():
                if parameter.name not in ("self", "cls"):
                    assert parameter.annotation is not inspect.Parameter.empty, f"{cls.__name__}.{name}({parameter})"
            assert method.__doc__, f"{cls.__name__}.{name} has no docstring"


def test_request_cancelled_error_does_not_shadow_asyncio():
    assert inferwire.RequestCancelledError is not asyncio.CancelledError
    assert not issubclass(inferwire.RequestCancelledError, asyncio.CancelledError)
    assert not issubclass(asyncio.CancelledError, inferwire.InferWireError)
    assert not hasattr(inferwire, "CancelledError")
    assert "CancelledError" not in inferwire.__all__
    namespace: dict = {"CancelledError": asyncio.CancelledError}
    exec("from inferwire import *", namespace)
    assert namespace["CancelledError"] is asyncio.CancelledError


STATUS_CLASSES = [
    ("RequestCancelledError", "CANCELLED"),
    ("UnknownError", "UNKNOWN"),
    ("InvalidArgumentError", "INVALID_ARGUMENT"),
    ("DeadlineExceededError", "DEADLINE_EXCEEDED"),
    ("NotFoundError", "NOT_FOUND"),
    ("AlreadyExistsError", "ALREADY_EXISTS"),
    ("PermissionDeniedError", "PERMISSION_DENIED"),
    ("ResourceExhaustedError", "RESOURCE_EXHAUSTED"),
    ("FailedPreconditionError", "FAILED_PRECONDITION"),
    ("AbortedError", "ABORTED"),
    ("OutOfRangeError", "OUT_OF_RANGE"),
    ("UnimplementedError", "UNIMPLEMENTED"),
    ("InternalError", "INTERNAL"),
    ("UnavailableError", "UNAVAILABLE"),
    ("DataLossError", "DATA_LOSS"),
    ("UnauthenticatedError", "UNAUTHENTICATED"),
]


@pytest.mark.parametrize("name, status", STATUS_CLASSES)
def test_exception_class_per_status_code(name, status):
    cls = getattr(inferwire, name)
    code = inferwire.StatusCode.Value(status)
    assert isinstance(cls, type) and issubclass(cls, inferwire.InferWireError)
    assert cls.__bases__ == (inferwire.InferWireError,)
    assert cls.__name__ == cls.__qualname__ == name and cls.__module__ == "inferwire.errors"
    assert cls.__doc__ and status in cls.__doc__
    assert cls.code == code

    error = inferwire.error_for(code, "what happened")
    assert type(error) is cls
    assert (error.code, error.message, error.code_name) == (code, "what happened", status)
    assert str(error) == f"{status}: what happened"
    with pytest.raises(inferwire.InferWireError):
        raise error


def test_exception_classes_cover_every_status_code():
    codes = {code for name, code in inferwire.StatusCode.items() if name != "OK"}
    assert {inferwire.StatusCode.Value(status) for _, status in STATUS_CLASSES} == codes
    assert set(errors.__all__) <= set(inferwire.__all__)


def test_protocol_error_and_unknown_codes():
    assert issubclass(inferwire.ProtocolError, inferwire.UnavailableError)
    assert inferwire.ProtocolError("garbled").code == inferwire.StatusCode.UNAVAILABLE
    error = inferwire.error_for(99, "from the future")
    assert type(error) is inferwire.InferWireError
    assert (error.code, error.code_name) == (99, "99")


USAGE = '''
from typing import Any, Coroutine, List, Optional, Tuple

from typing_extensions import assert_type

from inferwire import *
from inferwire._proto.management_pb2 import HistoryEntry, ModelStatus


def blocking(client: Client) -> None:
    assert_type(client.infer("m", {}), InferResult)
    assert_type(client.server_live(), bool)
    assert_type(client.server_not_ready_reasons(), List[str])
    assert_type(client.infer("m", {}, traceparent="00-...", tracestate=""), InferResult)
    assert_type(client.history("m"), List[HistoryEntry])
    assert_type(client.principal, Optional[Principal])
    assert_type(client.authenticate("token"), Principal)
    try:
        Client("h", 1, tls=True, tls_ca="ca.pem", token="t")
    except TLSHandshakeError as error:
        unavailable: UnavailableError = error


async def awaiting(client: AsyncClient) -> None:
    call: Coroutine[Any, Any, InferResult] = client.infer("m", {})
    call.close()
    assert_type(await client.infer("m", {}), InferResult)
    assert_type(await client.server_live(), bool)
    assert_type(await client.server_not_ready_reasons(), List[str])
    assert_type(await client.infer("m", {}, traceparent="00-...", tracestate=""), InferResult)
    assert_type(await AsyncClient.connect("h", 1), AsyncClient)
    assert_type(await client.authenticate("token"), Principal)
    # A forgotten await is a type error (--strict also fails if this ignore were not needed).
    result: InferResult = client.infer("m", {})  # type: ignore[assignment]
    try:
        await client.close()
    except RequestCancelledError as error:
        code: int = error.code


def balanced(client: BalancedClient) -> None:
    assert_type(client.infer("m", {}), InferResult)
    assert_type(client.list_models(), List[ModelStatus])
    assert_type(client.endpoints, Tuple[EndpointStatus, ...])
    assert_type(client.endpoints[0].outstanding, int)
    BalancedClient("dns:///fleet:8500", retry_inference=False, max_attempts=2, backoff=0.5)
    BalancedClient(["a:1", ("b", 2)])


async def balanced_awaiting(client: AsyncBalancedClient) -> None:
    assert_type(await client.infer("m", {}), InferResult)
    assert_type(await AsyncBalancedClient.connect(["a:1"]), AsyncBalancedClient)
    result: InferResult = client.infer("m", {})  # type: ignore[assignment]
    await client.refresh()
'''


def test_type_checkers_see_coroutines(tmp_path: Path):
    pytest.importorskip("mypy")
    (tmp_path / "usage.py").write_text(textwrap.dedent(USAGE))
    (tmp_path / "mypy.ini").write_text("[mypy]\n")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", "mypy.ini", "--cache-dir", "cache", "usage.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
