from . import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelConfig(_message.Message):
    __slots__ = ("name", "platform", "max_batch_size", "input", "output", "parameters", "instances", "dynamic_batching", "version_policy", "rollout")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_BATCHING_FIELD_NUMBER: _ClassVar[int]
    VERSION_POLICY_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    name: str
    platform: str
    max_batch_size: int
    input: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.TensorSpec]
    output: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.TensorSpec]
    parameters: _containers.ScalarMap[str, str]
    instances: int
    dynamic_batching: DynamicBatching
    version_policy: VersionPolicy
    rollout: RolloutSettings
    def __init__(self, name: _Optional[str] = ..., platform: _Optional[str] = ..., max_batch_size: _Optional[int] = ..., input: _Optional[_Iterable[_Union[_tensor_pb2.TensorSpec, _Mapping]]] = ..., output: _Optional[_Iterable[_Union[_tensor_pb2.TensorSpec, _Mapping]]] = ..., parameters: _Optional[_Mapping[str, str]] = ..., instances: _Optional[int] = ..., dynamic_batching: _Optional[_Union[DynamicBatching, _Mapping]] = ..., version_policy: _Optional[_Union[VersionPolicy, _Mapping]] = ..., rollout: _Optional[_Union[RolloutSettings, _Mapping]] = ...) -> None: ...

class VersionPolicy(_message.Message):
    __slots__ = ("latest", "all", "specific")
    class Latest(_message.Message):
        __slots__ = ("num_versions",)
        NUM_VERSIONS_FIELD_NUMBER: _ClassVar[int]
        num_versions: int
        def __init__(self, num_versions: _Optional[int] = ...) -> None: ...
    class All(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    class Specific(_message.Message):
        __slots__ = ("versions",)
        VERSIONS_FIELD_NUMBER: _ClassVar[int]
        versions: _containers.RepeatedScalarFieldContainer[int]
        def __init__(self, versions: _Optional[_Iterable[int]] = ...) -> None: ...
    LATEST_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    SPECIFIC_FIELD_NUMBER: _ClassVar[int]
    latest: VersionPolicy.Latest
    all: VersionPolicy.All
    specific: VersionPolicy.Specific
    def __init__(self, latest: _Optional[_Union[VersionPolicy.Latest, _Mapping]] = ..., all: _Optional[_Union[VersionPolicy.All, _Mapping]] = ..., specific: _Optional[_Union[VersionPolicy.Specific, _Mapping]] = ...) -> None: ...

class RolloutSettings(_message.Message):
    __slots__ = ("new_version_role", "canary_percent", "rollback_grace_seconds", "guard")
    class NewVersionRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        CANARY: _ClassVar[RolloutSettings.NewVersionRole]
        STABLE: _ClassVar[RolloutSettings.NewVersionRole]
        NONE: _ClassVar[RolloutSettings.NewVersionRole]
    CANARY: RolloutSettings.NewVersionRole
    STABLE: RolloutSettings.NewVersionRole
    NONE: RolloutSettings.NewVersionRole
    NEW_VERSION_ROLE_FIELD_NUMBER: _ClassVar[int]
    CANARY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GUARD_FIELD_NUMBER: _ClassVar[int]
    new_version_role: RolloutSettings.NewVersionRole
    canary_percent: int
    rollback_grace_seconds: int
    guard: RolloutGuard
    def __init__(self, new_version_role: _Optional[_Union[RolloutSettings.NewVersionRole, str]] = ..., canary_percent: _Optional[int] = ..., rollback_grace_seconds: _Optional[int] = ..., guard: _Optional[_Union[RolloutGuard, _Mapping]] = ...) -> None: ...

class RolloutGuard(_message.Message):
    __slots__ = ("max_error_rate_increase", "max_p99_ratio", "window_seconds", "min_requests")
    MAX_ERROR_RATE_INCREASE_FIELD_NUMBER: _ClassVar[int]
    MAX_P99_RATIO_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    max_error_rate_increase: float
    max_p99_ratio: float
    window_seconds: int
    min_requests: int
    def __init__(self, max_error_rate_increase: _Optional[float] = ..., max_p99_ratio: _Optional[float] = ..., window_seconds: _Optional[int] = ..., min_requests: _Optional[int] = ...) -> None: ...

class DynamicBatching(_message.Message):
    __slots__ = ("preferred_batch_size", "max_queue_delay_us", "max_queue_size")
    PREFERRED_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_DELAY_US_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    preferred_batch_size: _containers.RepeatedScalarFieldContainer[int]
    max_queue_delay_us: int
    max_queue_size: int
    def __init__(self, preferred_batch_size: _Optional[_Iterable[int]] = ..., max_queue_delay_us: _Optional[int] = ..., max_queue_size: _Optional[int] = ...) -> None: ...
