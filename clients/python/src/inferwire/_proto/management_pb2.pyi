from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VersionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERSION_STATE_UNSPECIFIED: _ClassVar[VersionState]
    LOADING: _ClassVar[VersionState]
    READY: _ClassVar[VersionState]
    DRAINING: _ClassVar[VersionState]
    UNLOADED: _ClassVar[VersionState]
    FAILED: _ClassVar[VersionState]
VERSION_STATE_UNSPECIFIED: VersionState
LOADING: VersionState
READY: VersionState
DRAINING: VersionState
UNLOADED: VersionState
FAILED: VersionState

class VersionStatus(_message.Message):
    __slots__ = ("version", "state", "reason", "request_count", "failure_count", "mean_compute_us")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_COMPUTE_US_FIELD_NUMBER: _ClassVar[int]
    version: int
    state: VersionState
    reason: str
    request_count: int
    failure_count: int
    mean_compute_us: int
    def __init__(self, version: _Optional[int] = ..., state: _Optional[_Union[VersionState, str]] = ..., reason: _Optional[str] = ..., request_count: _Optional[int] = ..., failure_count: _Optional[int] = ..., mean_compute_us: _Optional[int] = ...) -> None: ...

class Rollout(_message.Message):
    __slots__ = ("stable_version", "canary_version", "canary_percent", "sticky", "previous_stable_version", "shadow_version", "shadow_percent")
    STABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANARY_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANARY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    STICKY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHADOW_PERCENT_FIELD_NUMBER: _ClassVar[int]
    stable_version: int
    canary_version: int
    canary_percent: int
    sticky: bool
    previous_stable_version: int
    shadow_version: int
    shadow_percent: int
    def __init__(self, stable_version: _Optional[int] = ..., canary_version: _Optional[int] = ..., canary_percent: _Optional[int] = ..., sticky: bool = ..., previous_stable_version: _Optional[int] = ..., shadow_version: _Optional[int] = ..., shadow_percent: _Optional[int] = ...) -> None: ...

class ShadowReport(_message.Message):
    __slots__ = ("version", "compared", "differing", "max_abs_difference", "mean_abs_difference", "shadow_failures")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COMPARED_FIELD_NUMBER: _ClassVar[int]
    DIFFERING_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    MEAN_ABS_DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FAILURES_FIELD_NUMBER: _ClassVar[int]
    version: int
    compared: int
    differing: int
    max_abs_difference: float
    mean_abs_difference: float
    shadow_failures: int
    def __init__(self, version: _Optional[int] = ..., compared: _Optional[int] = ..., differing: _Optional[int] = ..., max_abs_difference: _Optional[float] = ..., mean_abs_difference: _Optional[float] = ..., shadow_failures: _Optional[int] = ...) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("name", "versions", "rollout", "shadow", "replicas")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions: _containers.RepeatedCompositeFieldContainer[VersionStatus]
    rollout: Rollout
    shadow: ShadowReport
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaVersions]
    def __init__(self, name: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[VersionStatus, _Mapping]]] = ..., rollout: _Optional[_Union[Rollout, _Mapping]] = ..., shadow: _Optional[_Union[ShadowReport, _Mapping]] = ..., replicas: _Optional[_Iterable[_Union[ReplicaVersions, _Mapping]]] = ...) -> None: ...

class ReplicaVersions(_message.Message):
    __slots__ = ("replica", "versions", "reported_unix_millis")
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    REPORTED_UNIX_MILLIS_FIELD_NUMBER: _ClassVar[int]
    replica: str
    versions: _containers.RepeatedCompositeFieldContainer[VersionStatus]
    reported_unix_millis: int
    def __init__(self, replica: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[VersionStatus, _Mapping]]] = ..., reported_unix_millis: _Optional[int] = ...) -> None: ...

class HistoryEntry(_message.Message):
    __slots__ = ("unix_millis", "model", "action", "detail", "actor", "principal")
    UNIX_MILLIS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    unix_millis: int
    model: str
    action: str
    detail: str
    actor: str
    principal: str
    def __init__(self, unix_millis: _Optional[int] = ..., model: _Optional[str] = ..., action: _Optional[str] = ..., detail: _Optional[str] = ..., actor: _Optional[str] = ..., principal: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ...) -> None: ...

class ModelStatusRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ModelStatusResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: ModelStatus
    def __init__(self, status: _Optional[_Union[ModelStatus, _Mapping]] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class LoadModelResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: VersionStatus
    def __init__(self, status: _Optional[_Union[VersionStatus, _Mapping]] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: VersionStatus
    def __init__(self, status: _Optional[_Union[VersionStatus, _Mapping]] = ...) -> None: ...

class SetTrafficRequest(_message.Message):
    __slots__ = ("name", "canary_version", "percent", "sticky")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CANARY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    STICKY_FIELD_NUMBER: _ClassVar[int]
    name: str
    canary_version: int
    percent: int
    sticky: bool
    def __init__(self, name: _Optional[str] = ..., canary_version: _Optional[int] = ..., percent: _Optional[int] = ..., sticky: bool = ...) -> None: ...

class SetTrafficResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...

class PromoteRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class PromoteResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...

class SetShadowRequest(_message.Message):
    __slots__ = ("name", "version", "percent")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    percent: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., percent: _Optional[int] = ...) -> None: ...

class SetShadowResponse(_message.Message):
    __slots__ = ("rollout",)
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    rollout: Rollout
    def __init__(self, rollout: _Optional[_Union[Rollout, _Mapping]] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class HistoryResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[HistoryEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[HistoryEntry, _Mapping]]] = ...) -> None: ...
