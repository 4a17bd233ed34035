from . import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Method(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METHOD_UNSPECIFIED: _ClassVar[Method]
    SERVER_LIVE: _ClassVar[Method]
    SERVER_READY: _ClassVar[Method]
    SERVER_METADATA: _ClassVar[Method]
    MODEL_READY: _ClassVar[Method]
    MODEL_METADATA: _ClassVar[Method]
    INFER: _ClassVar[Method]
    MODEL_STATISTICS: _ClassVar[Method]
    LIST_MODELS: _ClassVar[Method]
    MODEL_STATUS: _ClassVar[Method]
    LOAD_MODEL: _ClassVar[Method]
    UNLOAD_MODEL: _ClassVar[Method]
    SET_TRAFFIC: _ClassVar[Method]
    PROMOTE: _ClassVar[Method]
    ROLLBACK: _ClassVar[Method]
    HISTORY: _ClassVar[Method]
    SET_SHADOW: _ClassVar[Method]
METHOD_UNSPECIFIED: Method
SERVER_LIVE: Method
SERVER_READY: Method
SERVER_METADATA: Method
MODEL_READY: Method
MODEL_METADATA: Method
INFER: Method
MODEL_STATISTICS: Method
LIST_MODELS: Method
MODEL_STATUS: Method
LOAD_MODEL: Method
UNLOAD_MODEL: Method
SET_TRAFFIC: Method
PROMOTE: Method
ROLLBACK: Method
HISTORY: Method
SET_SHADOW: Method

class Hello(_message.Message):
    __slots__ = ("version", "max_frame_size", "max_concurrent_requests", "server_name", "server_version", "compression", "authentication_required", "principal")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATION_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    version: int
    max_frame_size: int
    max_concurrent_requests: int
    server_name: str
    server_version: str
    compression: bool
    authentication_required: bool
    principal: Principal
    def __init__(self, version: _Optional[int] = ..., max_frame_size: _Optional[int] = ..., max_concurrent_requests: _Optional[int] = ..., server_name: _Optional[str] = ..., server_version: _Optional[str] = ..., compression: bool = ..., authentication_required: bool = ..., principal: _Optional[_Union[Principal, _Mapping]] = ...) -> None: ...

class Authenticate(_message.Message):
    __slots__ = ("bearer_token",)
    BEARER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    bearer_token: str
    def __init__(self, bearer_token: _Optional[str] = ...) -> None: ...

class Principal(_message.Message):
    __slots__ = ("name", "roles", "models", "expires_unix_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    models: _containers.RepeatedScalarFieldContainer[str]
    expires_unix_seconds: int
    def __init__(self, name: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., models: _Optional[_Iterable[str]] = ..., expires_unix_seconds: _Optional[int] = ...) -> None: ...

class Authenticated(_message.Message):
    __slots__ = ("principal",)
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    principal: Principal
    def __init__(self, principal: _Optional[_Union[Principal, _Mapping]] = ...) -> None: ...

class GoAway(_message.Message):
    __slots__ = ("last_request_id", "code", "message")
    LAST_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    last_request_id: int
    code: _status_pb2.StatusCode
    message: str
    def __init__(self, last_request_id: _Optional[int] = ..., code: _Optional[_Union[_status_pb2.StatusCode, str]] = ..., message: _Optional[str] = ...) -> None: ...
