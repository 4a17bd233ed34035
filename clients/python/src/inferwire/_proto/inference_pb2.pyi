from . import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NORMAL: _ClassVar[Priority]
    HIGH: _ClassVar[Priority]
NORMAL: Priority
HIGH: Priority

class ServerLiveRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerLiveResponse(_message.Message):
    __slots__ = ("live",)
    LIVE_FIELD_NUMBER: _ClassVar[int]
    live: bool
    def __init__(self, live: bool = ...) -> None: ...

class ServerReadyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerReadyResponse(_message.Message):
    __slots__ = ("ready", "not_ready_reasons")
    READY_FIELD_NUMBER: _ClassVar[int]
    NOT_READY_REASONS_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    not_ready_reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ready: bool = ..., not_ready_reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class ServerMetadataRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerMetadataResponse(_message.Message):
    __slots__ = ("name", "version", "protocol_versions", "extensions", "runtime")
    class RuntimeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    protocol_versions: _containers.RepeatedScalarFieldContainer[int]
    extensions: _containers.RepeatedScalarFieldContainer[str]
    runtime: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., protocol_versions: _Optional[_Iterable[int]] = ..., extensions: _Optional[_Iterable[str]] = ..., runtime: _Optional[_Mapping[str, str]] = ...) -> None: ...

class VersionSelector(_message.Message):
    __slots__ = ("version", "label")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    version: int
    label: str
    def __init__(self, version: _Optional[int] = ..., label: _Optional[str] = ...) -> None: ...

class ModelReadyRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: VersionSelector
    def __init__(self, name: _Optional[str] = ..., version: _Optional[_Union[VersionSelector, _Mapping]] = ...) -> None: ...

class ModelReadyResponse(_message.Message):
    __slots__ = ("ready", "version")
    READY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    version: int
    def __init__(self, ready: bool = ..., version: _Optional[int] = ...) -> None: ...

class ModelMetadataRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: VersionSelector
    def __init__(self, name: _Optional[str] = ..., version: _Optional[_Union[VersionSelector, _Mapping]] = ...) -> None: ...

class ModelMetadataResponse(_message.Message):
    __slots__ = ("name", "versions", "version", "platform", "inputs", "outputs", "max_batch_size")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions: _containers.RepeatedScalarFieldContainer[int]
    version: int
    platform: str
    inputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.TensorSpec]
    max_batch_size: int
    def __init__(self, name: _Optional[str] = ..., versions: _Optional[_Iterable[int]] = ..., version: _Optional[int] = ..., platform: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[_tensor_pb2.TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[_tensor_pb2.TensorSpec, _Mapping]]] = ..., max_batch_size: _Optional[int] = ...) -> None: ...

class Parameter(_message.Message):
    __slots__ = ("bool_param", "int64_param", "string_param", "double_param")
    BOOL_PARAM_FIELD_NUMBER: _ClassVar[int]
    INT64_PARAM_FIELD_NUMBER: _ClassVar[int]
    STRING_PARAM_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_PARAM_FIELD_NUMBER: _ClassVar[int]
    bool_param: bool
    int64_param: int
    string_param: str
    double_param: float
    def __init__(self, bool_param: bool = ..., int64_param: _Optional[int] = ..., string_param: _Optional[str] = ..., double_param: _Optional[float] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("model_name", "version", "id", "inputs", "output_names", "parameters", "priority", "routing_key", "traceparent", "tracestate")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Parameter
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Parameter, _Mapping]] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_NAMES_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ROUTING_KEY_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TRACESTATE_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: VersionSelector
    id: str
    inputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    output_names: _containers.RepeatedScalarFieldContainer[str]
    parameters: _containers.MessageMap[str, Parameter]
    priority: Priority
    routing_key: str
    traceparent: str
    tracestate: str
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[_Union[VersionSelector, _Mapping]] = ..., id: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., output_names: _Optional[_Iterable[str]] = ..., parameters: _Optional[_Mapping[str, Parameter]] = ..., priority: _Optional[_Union[Priority, str]] = ..., routing_key: _Optional[str] = ..., traceparent: _Optional[str] = ..., tracestate: _Optional[str] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "id", "outputs", "parameters")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Parameter
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Parameter, _Mapping]] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: int
    id: str
    outputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    parameters: _containers.MessageMap[str, Parameter]
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[int] = ..., id: _Optional[str] = ..., outputs: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., parameters: _Optional[_Mapping[str, Parameter]] = ...) -> None: ...

class ModelStatisticsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class VersionStatistics(_message.Message):
    __slots__ = ("name", "version", "request_count", "failure_count", "execution_count", "batch_size_counts", "queue_time_us", "compute_time_us", "queue_time_histogram", "compute_time_histogram", "status_counts", "request_time_us", "request_time_histogram", "features")
    class BatchSizeCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    class StatusCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_COUNT_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_COUNT_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_TIME_US_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_TIME_US_FIELD_NUMBER: _ClassVar[int]
    QUEUE_TIME_HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_TIME_HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    STATUS_COUNTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_TIME_US_FIELD_NUMBER: _ClassVar[int]
    REQUEST_TIME_HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    request_count: int
    failure_count: int
    execution_count: int
    batch_size_counts: _containers.ScalarMap[int, int]
    queue_time_us: int
    compute_time_us: int
    queue_time_histogram: _containers.RepeatedScalarFieldContainer[int]
    compute_time_histogram: _containers.RepeatedScalarFieldContainer[int]
    status_counts: _containers.ScalarMap[int, int]
    request_time_us: int
    request_time_histogram: _containers.RepeatedScalarFieldContainer[int]
    features: _containers.RepeatedCompositeFieldContainer[FeatureStatistics]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., request_count: _Optional[int] = ..., failure_count: _Optional[int] = ..., execution_count: _Optional[int] = ..., batch_size_counts: _Optional[_Mapping[int, int]] = ..., queue_time_us: _Optional[int] = ..., compute_time_us: _Optional[int] = ..., queue_time_histogram: _Optional[_Iterable[int]] = ..., compute_time_histogram: _Optional[_Iterable[int]] = ..., status_counts: _Optional[_Mapping[int, int]] = ..., request_time_us: _Optional[int] = ..., request_time_histogram: _Optional[_Iterable[int]] = ..., features: _Optional[_Iterable[_Union[FeatureStatistics, _Mapping]]] = ...) -> None: ...

class FeatureStatistics(_message.Message):
    __slots__ = ("input", "index", "count", "mean", "variance", "min", "max", "missing")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    VARIANCE_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    input: str
    index: int
    count: int
    mean: float
    variance: float
    min: float
    max: float
    missing: int
    def __init__(self, input: _Optional[str] = ..., index: _Optional[int] = ..., count: _Optional[int] = ..., mean: _Optional[float] = ..., variance: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., missing: _Optional[int] = ...) -> None: ...

class ModelStatisticsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[VersionStatistics]
    def __init__(self, versions: _Optional[_Iterable[_Union[VersionStatistics, _Mapping]]] = ...) -> None: ...
