"""The calls both clients offer, written once.

Each public method builds a request message and names how to turn the response
into a Python value; ``_invoke`` (defined by each client) sends it. In
``Client`` ``_invoke`` returns the value, in ``AsyncClient`` an awaitable of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np

from ._proto import frames_pb2, inference_pb2, management_pb2
from .tensors import from_tensor, to_tensor

Method = frames_pb2.Method

#: A version selector: an exact version number, a label ("stable", "canary"), or None to let the server route.
Version = Union[int, str, None]

_RESPONSES = {
    Method.SERVER_LIVE: inference_pb2.ServerLiveResponse,
    Method.SERVER_READY: inference_pb2.ServerReadyResponse,
    Method.SERVER_METADATA: inference_pb2.ServerMetadataResponse,
    Method.MODEL_READY: inference_pb2.ModelReadyResponse,
    Method.MODEL_METADATA: inference_pb2.ModelMetadataResponse,
    Method.INFER: inference_pb2.InferResponse,
    Method.MODEL_STATISTICS: inference_pb2.ModelStatisticsResponse,
    Method.LIST_MODELS: management_pb2.ListModelsResponse,
    Method.MODEL_STATUS: management_pb2.ModelStatusResponse,
    Method.LOAD_MODEL: management_pb2.LoadModelResponse,
    Method.UNLOAD_MODEL: management_pb2.UnloadModelResponse,
    Method.SET_TRAFFIC: management_pb2.SetTrafficResponse,
    Method.PROMOTE: management_pb2.PromoteResponse,
    Method.ROLLBACK: management_pb2.RollbackResponse,
    Method.HISTORY: management_pb2.HistoryResponse,
    Method.SET_SHADOW: management_pb2.SetShadowResponse,
}


@dataclass
class Call:
    """One request ready to send: method number, message, and how to read the answer."""

    method: int
    request: Any
    result: Callable[[Any], Any] = lambda response: response

    @property
    def response_type(self) -> type:
        return _RESPONSES[self.method]


@dataclass
class InferResult(Mapping[str, np.ndarray]):
    """The outputs of one inference, by name, plus which model version computed them."""

    model_name: str
    model_version: int
    id: str
    outputs: Dict[str, np.ndarray] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.outputs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.outputs)

    def __len__(self) -> int:
        return len(self.outputs)


def _selector(version: Version) -> Optional[inference_pb2.VersionSelector]:
    if version is None:
        return None
    if isinstance(version, str):
        return inference_pb2.VersionSelector(label=version)
    if isinstance(version, (int, np.integer)) and not isinstance(version, bool):
        return inference_pb2.VersionSelector(version=int(version))
    raise TypeError(f"version must be an int, a label or None, not {type(version).__name__}")


def _parameter(value: Any) -> inference_pb2.Parameter:
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


class Api:
    """Calls shared by :class:`~inferwire.Client` and :class:`~inferwire.AsyncClient`.

    Every method takes keyword-only ``timeout`` (seconds; ``None`` uses the
    client's default) and ``compress`` (``None`` uses the client's default).
    """

    def _invoke(self, call: Call, *, timeout: Optional[float], compress: Optional[bool]) -> Any:
        raise NotImplementedError

    # -- inference service ------------------------------------------------------

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        outputs: Optional[Sequence[str]] = None,
        version: Version = None,
        priority: int = inference_pb2.NORMAL,
        routing_key: str = "",
        request_id: str = "",
        parameters: Optional[Mapping[str, Any]] = None,
        timeout: Optional[float] = None,
        compress: Optional[bool] = None,
    ) -> InferResult:
        """Run ``model`` on ``inputs`` (name -> numpy array) and return its outputs.

        ``outputs`` limits which outputs are returned; ``version`` is a version
        number, a label (``"stable"``/``"canary"``) or ``None`` to let the server
        route. ``priority`` is ``inferwire.Priority.HIGH`` or ``NORMAL``;
        ``routing_key`` pins a sticky canary; ``request_id`` is echoed back.
        """
        request = inference_pb2.InferRequest(
            model_name=model,
            version=_selector(version),
            id=request_id,
            inputs=[to_tensor(name, value) for name, value in inputs.items()],
            output_names=list(outputs or ()),
            priority=priority,
            routing_key=routing_key,
        )
        for key, value in (parameters or {}).items():
            request.parameters[key].CopyFrom(_parameter(value))
        return self._invoke(Call(Method.INFER, request, _infer_result), timeout=timeout, compress=compress)

    def server_live(self, *, timeout: Optional[float] = None, compress: Optional[bool] = None) -> bool:
        """Whether the server is live."""
        call = Call(Method.SERVER_LIVE, inference_pb2.ServerLiveRequest(), lambda r: r.live)
        return self._invoke(call, timeout=timeout, compress=compress)

    def server_ready(self, *, timeout: Optional[float] = None, compress: Optional[bool] = None) -> bool:
        """Whether the server is ready: not shutting down and every model has a version serving."""
        call = Call(Method.SERVER_READY, inference_pb2.ServerReadyRequest(), lambda r: r.ready)
        return self._invoke(call, timeout=timeout, compress=compress)

    def server_metadata(
        self, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> inference_pb2.ServerMetadataResponse:
        """The server's name, version, protocol versions and extensions."""
        call = Call(Method.SERVER_METADATA, inference_pb2.ServerMetadataRequest())
        return self._invoke(call, timeout=timeout, compress=compress)

    def model_ready(
        self, model: str, version: Version = None, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> bool:
        """Whether ``model`` (at ``version``) is ready; ``False`` for unknown models."""
        request = inference_pb2.ModelReadyRequest(name=model, version=_selector(version))
        return self._invoke(Call(Method.MODEL_READY, request, lambda r: r.ready), timeout=timeout, compress=compress)

    def model_metadata(
        self, model: str, version: Version = None, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> inference_pb2.ModelMetadataResponse:
        """Versions, platform, input and output specs and ``max_batch_size`` of ``model``."""
        request = inference_pb2.ModelMetadataRequest(name=model, version=_selector(version))
        return self._invoke(Call(Method.MODEL_METADATA, request), timeout=timeout, compress=compress)

    def model_statistics(
        self, model: str = "", *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> List[inference_pb2.VersionStatistics]:
        """Per-version request, execution and timing statistics (every model when ``model`` is empty)."""
        request = inference_pb2.ModelStatisticsRequest(name=model)
        call = Call(Method.MODEL_STATISTICS, request, lambda r: list(r.versions))
        return self._invoke(call, timeout=timeout, compress=compress)

    # -- management service -----------------------------------------------------

    def list_models(
        self, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> List[management_pb2.ModelStatus]:
        """Every model's status: versions, their states, and the rollout."""
        call = Call(Method.LIST_MODELS, management_pb2.ListModelsRequest(), lambda r: list(r.models))
        return self._invoke(call, timeout=timeout, compress=compress)

    def model_status(
        self, model: str, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> management_pb2.ModelStatus:
        """One model's versions (state, counts, mean compute time) and rollout."""
        call = Call(Method.MODEL_STATUS, management_pb2.ModelStatusRequest(name=model), lambda r: r.status)
        return self._invoke(call, timeout=timeout, compress=compress)

    def load_model(
        self, model: str, version: int, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> management_pb2.VersionStatus:
        """Load ``version`` of ``model``; answers once it is READY or FAILED."""
        request = management_pb2.LoadModelRequest(name=model, version=version)
        return self._invoke(Call(Method.LOAD_MODEL, request, lambda r: r.status), timeout=timeout, compress=compress)

    def unload_model(
        self, model: str, version: int, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> management_pb2.VersionStatus:
        """Unload ``version`` of ``model`` once its queued and running requests have finished."""
        request = management_pb2.UnloadModelRequest(name=model, version=version)
        return self._invoke(Call(Method.UNLOAD_MODEL, request, lambda r: r.status), timeout=timeout, compress=compress)

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
        request = management_pb2.SetTrafficRequest(
            name=model, canary_version=canary_version, percent=percent, sticky=sticky
        )
        return self._invoke(Call(Method.SET_TRAFFIC, request, lambda r: r.rollout), timeout=timeout, compress=compress)

    def promote(
        self, model: str, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> management_pb2.Rollout:
        """Make the canary the stable version (the old stable stays loaded for rollback)."""
        request = management_pb2.PromoteRequest(name=model)
        return self._invoke(Call(Method.PROMOTE, request, lambda r: r.rollout), timeout=timeout, compress=compress)

    def rollback(
        self, model: str, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> management_pb2.Rollout:
        """Withdraw the canary, or else restore the previous stable version."""
        request = management_pb2.RollbackRequest(name=model)
        return self._invoke(Call(Method.ROLLBACK, request, lambda r: r.rollout), timeout=timeout, compress=compress)

    def set_shadow(
        self, model: str, version: int, percent: int, *, timeout: Optional[float] = None,
        compress: Optional[bool] = None,
    ) -> management_pb2.Rollout:
        """Mirror ``percent`` % of stable's unlabelled requests to ``version`` (0 stops shadowing)."""
        request = management_pb2.SetShadowRequest(name=model, version=version, percent=percent)
        return self._invoke(Call(Method.SET_SHADOW, request, lambda r: r.rollout), timeout=timeout, compress=compress)

    def history(
        self, model: str, *, timeout: Optional[float] = None, compress: Optional[bool] = None
    ) -> List[management_pb2.HistoryEntry]:
        """Who changed what about ``model``'s versions and rollout, and when."""
        request = management_pb2.HistoryRequest(name=model)
        return self._invoke(Call(Method.HISTORY, request, lambda r: list(r.entries)), timeout=timeout, compress=compress)
