"""The calls both clients offer, written once as request builders.

Each builder returns a :class:`Call`: the method number, the request message,
the response message type, and how to turn the response into a Python value.
``Client`` and ``AsyncClient`` each wrap every builder in a public method of
their own (a plain method in one, a coroutine in the other) so that type
checkers see exactly what each call returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import (
    Any, Callable, Dict, Generic, Iterator, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union,
)

import numpy as np
from google.protobuf.message import Message
from numpy.typing import ArrayLike, NDArray

from ._proto import frames_pb2, inference_pb2, management_pb2
from .tensors import from_tensor, to_tensor

Method = frames_pb2.Method

#: A version selector: an exact version number, a label ("stable", "canary"), or None to let the server route.
Version = Union[int, str, None]

#: A value for ``infer(parameters=...)``; numpy scalars are accepted too.
ParameterValue = Union[bool, int, float, str, "np.integer[Any]", "np.floating[Any]"]

R = TypeVar("R", bound=Message)
T = TypeVar("T")


def _itself(response: R) -> R:
    return response


@dataclass(frozen=True)
class Call(Generic[R, T]):
    """One request ready to send: method number, message, response type, and how to read the answer."""

    method: int
    request: Message
    response_type: Type[R]
    result: Callable[[R], T]


@dataclass
class InferResult(Mapping[str, NDArray[Any]]):
    """The outputs of one inference, by name, plus which model version computed them."""

    model_name: str
    model_version: int
    id: str
    outputs: Dict[str, NDArray[Any]] = field(default_factory=dict)

    def __getitem__(self, name: str) -> NDArray[Any]:
        return self.outputs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.outputs)

    def __len__(self) -> int:
        return len(self.outputs)


@dataclass(frozen=True)
class Principal:
    """Who a connection acts as on the server, and what it may do (PROTOCOL.md section 1b).

    ``name`` is the token file's name for the token, the JWT's ``sub``, or the client
    certificate's common name. ``roles`` are some of ``"infer"``, ``"manage"``,
    ``"admin"``. ``models`` are the model names, or prefixes ending in ``*``, the
    principal may reach; empty means every model. ``expires_unix_seconds`` is when the
    credentials stop being accepted (0: never); :attr:`expires` is the same as a
    ``datetime``.
    """

    name: str
    roles: Tuple[str, ...] = ()
    models: Tuple[str, ...] = ()
    expires_unix_seconds: int = 0

    @classmethod
    def from_proto(cls, message: frames_pb2.Principal) -> "Principal":
        return cls(
            name=message.name,
            roles=tuple(message.roles),
            models=tuple(message.models),
            expires_unix_seconds=message.expires_unix_seconds,
        )

    @property
    def expires(self) -> Optional[datetime]:
        """When the credentials expire (UTC), or None if they do not."""
        if not self.expires_unix_seconds:
            return None
        return datetime.fromtimestamp(self.expires_unix_seconds, tz=timezone.utc)

    def may_reach(self, model: str) -> bool:
        """Whether ``model`` is among :attr:`models` (by name or ``prefix*``); always true when that is empty."""
        if not self.models:
            return True
        return any(
            model.startswith(entry[:-1]) if entry.endswith("*") else model == entry for entry in self.models
        )


def _selector(version: Version) -> Optional[inference_pb2.VersionSelector]:
    if version is None:
        return None
    if isinstance(version, str):
        return inference_pb2.VersionSelector(label=version)
    if isinstance(version, (int, np.integer)) and not isinstance(version, bool):
        return inference_pb2.VersionSelector(version=int(version))
    raise TypeError(f"version must be an int, a label or None, not {type(version).__name__}")


def _parameter(value: ParameterValue) -> inference_pb2.Parameter:
    if isinstance(value, bool):
        return inference_pb2.Parameter(bool_param=value)
    if isinstance(value, (int, np.integer)):
        return inference_pb2.Parameter(int64_param=int(value))
    if isinstance(value, (float, np.floating)):
        return inference_pb2.Parameter(double_param=float(value))
    if isinstance(value, str):
        return inference_pb2.Parameter(string_param=value)
    raise TypeError(f"parameter values must be bool, int, float or str, not {type(value).__name__}")


def _infer_result(response: inference_pb2.InferResponse) -> InferResult:
    return InferResult(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id,
        outputs={tensor.name: from_tensor(tensor) for tensor in response.outputs},
    )


# -- inference service ----------------------------------------------------------


def infer(
    model: str,
    inputs: Mapping[str, ArrayLike],
    *,
    outputs: Optional[Sequence[str]],
    version: Version,
    priority: int,
    routing_key: str,
    request_id: str,
    parameters: Optional[Mapping[str, ParameterValue]],
    traceparent: str = "",
    tracestate: str = "",
) -> Call[inference_pb2.InferResponse, InferResult]:
    request = inference_pb2.InferRequest(
        model_name=model,
        version=_selector(version),
        id=request_id,
        inputs=[to_tensor(name, value) for name, value in inputs.items()],
        output_names=list(outputs or ()),
        routing_key=routing_key,
        traceparent=traceparent,
        tracestate=tracestate,
    )
    # protoc's stubs type enum fields as the enum class, but any int is a valid value.
    request.priority = priority  # type: ignore[assignment]
    for key, value in (parameters or {}).items():
        request.parameters[key].CopyFrom(_parameter(value))
    return Call(Method.INFER, request, inference_pb2.InferResponse, _infer_result)


def server_live() -> Call[inference_pb2.ServerLiveResponse, bool]:
    return Call(Method.SERVER_LIVE, inference_pb2.ServerLiveRequest(), inference_pb2.ServerLiveResponse,
                lambda r: r.live)


def server_ready() -> Call[inference_pb2.ServerReadyResponse, bool]:
    return Call(Method.SERVER_READY, inference_pb2.ServerReadyRequest(), inference_pb2.ServerReadyResponse,
                lambda r: r.ready)


def server_not_ready_reasons() -> Call[inference_pb2.ServerReadyResponse, List[str]]:
    return Call(Method.SERVER_READY, inference_pb2.ServerReadyRequest(), inference_pb2.ServerReadyResponse,
                # A server older than not_ready_reasons only says "not ready".
                lambda r: [] if r.ready else (list(r.not_ready_reasons) or ["the server says it is not ready"]))


def server_metadata() -> Call[inference_pb2.ServerMetadataResponse, inference_pb2.ServerMetadataResponse]:
    return Call(Method.SERVER_METADATA, inference_pb2.ServerMetadataRequest(), inference_pb2.ServerMetadataResponse,
                _itself)


def model_ready(model: str, version: Version) -> Call[inference_pb2.ModelReadyResponse, bool]:
    request = inference_pb2.ModelReadyRequest(name=model, version=_selector(version))
    return Call(Method.MODEL_READY, request, inference_pb2.ModelReadyResponse, lambda r: r.ready)


def model_metadata(
    model: str, version: Version
) -> Call[inference_pb2.ModelMetadataResponse, inference_pb2.ModelMetadataResponse]:
    request = inference_pb2.ModelMetadataRequest(name=model, version=_selector(version))
    return Call(Method.MODEL_METADATA, request, inference_pb2.ModelMetadataResponse, _itself)


def model_statistics(
    model: str,
) -> Call[inference_pb2.ModelStatisticsResponse, List[inference_pb2.VersionStatistics]]:
    request = inference_pb2.ModelStatisticsRequest(name=model)
    return Call(Method.MODEL_STATISTICS, request, inference_pb2.ModelStatisticsResponse, lambda r: list(r.versions))


# -- management service ---------------------------------------------------------


def list_models() -> Call[management_pb2.ListModelsResponse, List[management_pb2.ModelStatus]]:
    return Call(Method.LIST_MODELS, management_pb2.ListModelsRequest(), management_pb2.ListModelsResponse,
                lambda r: list(r.models))


def model_status(model: str) -> Call[management_pb2.ModelStatusResponse, management_pb2.ModelStatus]:
    request = management_pb2.ModelStatusRequest(name=model)
    return Call(Method.MODEL_STATUS, request, management_pb2.ModelStatusResponse, lambda r: r.status)


def load_model(model: str, version: int) -> Call[management_pb2.LoadModelResponse, management_pb2.VersionStatus]:
    request = management_pb2.LoadModelRequest(name=model, version=version)
    return Call(Method.LOAD_MODEL, request, management_pb2.LoadModelResponse, lambda r: r.status)


def unload_model(model: str, version: int) -> Call[management_pb2.UnloadModelResponse, management_pb2.VersionStatus]:
    request = management_pb2.UnloadModelRequest(name=model, version=version)
    return Call(Method.UNLOAD_MODEL, request, management_pb2.UnloadModelResponse, lambda r: r.status)


def set_traffic(
    model: str, canary_version: int, percent: int, sticky: bool
) -> Call[management_pb2.SetTrafficResponse, management_pb2.Rollout]:
    request = management_pb2.SetTrafficRequest(
        name=model, canary_version=canary_version, percent=percent, sticky=sticky
    )
    return Call(Method.SET_TRAFFIC, request, management_pb2.SetTrafficResponse, lambda r: r.rollout)


def promote(model: str) -> Call[management_pb2.PromoteResponse, management_pb2.Rollout]:
    request = management_pb2.PromoteRequest(name=model)
    return Call(Method.PROMOTE, request, management_pb2.PromoteResponse, lambda r: r.rollout)


def rollback(model: str) -> Call[management_pb2.RollbackResponse, management_pb2.Rollout]:
    request = management_pb2.RollbackRequest(name=model)
    return Call(Method.ROLLBACK, request, management_pb2.RollbackResponse, lambda r: r.rollout)


def set_shadow(
    model: str, version: int, percent: int
) -> Call[management_pb2.SetShadowResponse, management_pb2.Rollout]:
    request = management_pb2.SetShadowRequest(name=model, version=version, percent=percent)
    return Call(Method.SET_SHADOW, request, management_pb2.SetShadowResponse, lambda r: r.rollout)


def history(model: str) -> Call[management_pb2.HistoryResponse, List[management_pb2.HistoryEntry]]:
    request = management_pb2.HistoryRequest(name=model)
    return Call(Method.HISTORY, request, management_pb2.HistoryResponse, lambda r: list(r.entries))
