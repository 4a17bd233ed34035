from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_TYPE_UNSPECIFIED: _ClassVar[DataType]
    BOOL: _ClassVar[DataType]
    UINT8: _ClassVar[DataType]
    INT8: _ClassVar[DataType]
    INT16: _ClassVar[DataType]
    INT32: _ClassVar[DataType]
    INT64: _ClassVar[DataType]
    FP16: _ClassVar[DataType]
    FP32: _ClassVar[DataType]
    FP64: _ClassVar[DataType]
    BYTES: _ClassVar[DataType]
    UINT16: _ClassVar[DataType]
    UINT32: _ClassVar[DataType]
    UINT64: _ClassVar[DataType]
    BF16: _ClassVar[DataType]
    FP8_E4M3FN: _ClassVar[DataType]
    FP8_E4M3FNUZ: _ClassVar[DataType]
    FP8_E5M2: _ClassVar[DataType]
    FP8_E5M2FNUZ: _ClassVar[DataType]
    FP8_E8M0: _ClassVar[DataType]
    FP4_E2M1: _ClassVar[DataType]
    INT4: _ClassVar[DataType]
    UINT4: _ClassVar[DataType]
    INT2: _ClassVar[DataType]
    UINT2: _ClassVar[DataType]
DATA_TYPE_UNSPECIFIED: DataType
BOOL: DataType
UINT8: DataType
INT8: DataType
INT16: DataType
INT32: DataType
INT64: DataType
FP16: DataType
FP32: DataType
FP64: DataType
BYTES: DataType
UINT16: DataType
UINT32: DataType
UINT64: DataType
BF16: DataType
FP8_E4M3FN: DataType
FP8_E4M3FNUZ: DataType
FP8_E5M2: DataType
FP8_E5M2FNUZ: DataType
FP8_E8M0: DataType
FP4_E2M1: DataType
INT4: DataType
UINT4: DataType
INT2: DataType
UINT2: DataType

class Tensor(_message.Message):
    __slots__ = ("name", "datatype", "shape", "raw_contents", "contents")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    RAW_CONTENTS_FIELD_NUMBER: _ClassVar[int]
    CONTENTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: DataType
    shape: _containers.RepeatedScalarFieldContainer[int]
    raw_contents: bytes
    contents: TensorContents
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[_Union[DataType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., raw_contents: _Optional[bytes] = ..., contents: _Optional[_Union[TensorContents, _Mapping]] = ...) -> None: ...

class TensorContents(_message.Message):
    __slots__ = ("bool_contents", "int_contents", "int64_contents", "uint_contents", "fp32_contents", "fp64_contents", "bytes_contents")
    BOOL_CONTENTS_FIELD_NUMBER: _ClassVar[int]
    INT_CONTENTS_FIELD_NUMBER: _ClassVar[int]
    INT64_CONTENTS_FIELD_NUMBER: _ClassVar[int]
    UINT_CONTENTS_FIELD_NUMBER: _ClassVar[int]
    FP32_CONTENTS_FIELD_NUMBER: _ClassVar[int]
    FP64_CONTENTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_CONTENTS_FIELD_NUMBER: _ClassVar[int]
    bool_contents: _containers.RepeatedScalarFieldContainer[bool]
    int_contents: _containers.RepeatedScalarFieldContainer[int]
    int64_contents: _containers.RepeatedScalarFieldContainer[int]
    uint_contents: _containers.RepeatedScalarFieldContainer[int]
    fp32_contents: _containers.RepeatedScalarFieldContainer[float]
    fp64_contents: _containers.RepeatedScalarFieldContainer[float]
    bytes_contents: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, bool_contents: _Optional[_Iterable[bool]] = ..., int_contents: _Optional[_Iterable[int]] = ..., int64_contents: _Optional[_Iterable[int]] = ..., uint_contents: _Optional[_Iterable[int]] = ..., fp32_contents: _Optional[_Iterable[float]] = ..., fp64_contents: _Optional[_Iterable[float]] = ..., bytes_contents: _Optional[_Iterable[bytes]] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "datatype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: DataType
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[_Union[DataType, str]] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...
