"""Conversion between numpy arrays and ``inferwire.v1.Tensor`` messages.

Elements travel little-endian in row-major order in ``raw_contents``; BYTES
elements are each a 4-byte little-endian length followed by the bytes.

BF16 (bfloat16, the upper 16 bits of an IEEE 754 binary32) has no numpy dtype:
received BF16 tensors decode to float32 (exactly: every bfloat16 value is a
float32 value), and this module never sends BF16 (float32 arrays go as FP32).

The types that travel a byte per element decode as those bytes: INT4 and INT2 to
int8 values, UINT4 and UINT2 to uint8 values, and the float8 and float4 formats
(FP8_E4M3FN, FP8_E4M3FNUZ, FP8_E5M2, FP8_E5M2FNUZ, FP8_E8M0, FP4_E2M1) to their
uint8 codes, which ml_dtypes can view as floats (``a.view(ml_dtypes.float8_e4m3fn)``).
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Tuple

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from ._proto import tensor_pb2

__all__ = ["to_tensor", "from_tensor", "numpy_dtype", "wire_dtype"]

DataType = tensor_pb2.DataType

_DTYPES: Tuple[Tuple[tensor_pb2.DataType, np.dtype[Any]], ...] = (
    (DataType.BOOL, np.dtype(np.bool_)),
    (DataType.UINT8, np.dtype(np.uint8)),
    (DataType.INT8, np.dtype(np.int8)),
    (DataType.INT16, np.dtype(np.int16)),
    (DataType.INT32, np.dtype(np.int32)),
    (DataType.INT64, np.dtype(np.int64)),
    (DataType.FP16, np.dtype(np.float16)),
    (DataType.FP32, np.dtype(np.float32)),
    (DataType.FP64, np.dtype(np.float64)),
    (DataType.BYTES, np.dtype(object)),
    (DataType.UINT16, np.dtype(np.uint16)),
    (DataType.UINT32, np.dtype(np.uint32)),
    (DataType.UINT64, np.dtype(np.uint64)),
)
# Keyed by plain int so that any received datatype number can be looked up.
# BF16 decodes to float32 (see from_tensor) but is never chosen for sending.
_TO_NUMPY: Dict[int, np.dtype[Any]] = {
    **{wire: dt for wire, dt in _DTYPES},
    DataType.BF16: np.dtype(np.float32),
    **{wire: np.dtype(np.int8) for wire in (DataType.INT4, DataType.INT2)},
    **{
        wire: np.dtype(np.uint8)
        for wire in (
            DataType.UINT4,
            DataType.UINT2,
            DataType.FP8_E4M3FN,
            DataType.FP8_E4M3FNUZ,
            DataType.FP8_E5M2,
            DataType.FP8_E5M2FNUZ,
            DataType.FP8_E8M0,
            DataType.FP4_E2M1,
        )
    },
}
_FROM_NUMPY: Dict[np.dtype[Any], tensor_pb2.DataType] = {dt: wire for wire, dt in _DTYPES if wire != DataType.BYTES}

_LENGTH = struct.Struct("<I")


def wire_dtype(dtype: DTypeLike) -> tensor_pb2.DataType:
    """The wire ``DataType`` for a numpy dtype (object, bytes and str arrays are BYTES)."""
    resolved = np.dtype(dtype)
    if resolved.kind in "OSU":
        return DataType.BYTES
    try:
        return _FROM_NUMPY[resolved.newbyteorder("=")]
    except KeyError:
        raise TypeError(f"numpy dtype {resolved} has no InferWire equivalent") from None


def numpy_dtype(datatype: int) -> np.dtype[Any]:
    """The numpy dtype ``from_tensor`` gives a wire ``DataType``.

    BYTES maps to ``object`` (holding ``bytes``); BF16, which numpy lacks, to float32.
    """
    try:
        return _TO_NUMPY[datatype]
    except KeyError:
        raise TypeError(f"unknown InferWire datatype {datatype}") from None


def _encode_bytes(array: NDArray[Any]) -> bytes:
    parts: List[bytes] = []
    for item in array.reshape(-1):
        if isinstance(item, str):
            item = item.encode("utf-8")
        elif not isinstance(item, (bytes, bytearray, memoryview)):
            raise TypeError(f"BYTES tensor elements must be bytes or str, got {type(item).__name__}")
        parts.append(_LENGTH.pack(len(item)))
        parts.append(bytes(item))
    return b"".join(parts)


def _decode_bytes(raw: bytes, count: int) -> NDArray[np.object_]:
    out = np.empty(count, dtype=object)
    view = memoryview(raw)
    offset = 0
    for i in range(count):
        if offset + 4 > len(raw):
            raise ValueError("BYTES tensor is truncated")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise ValueError("BYTES tensor is truncated")
        out[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(raw):
        raise ValueError("BYTES tensor has trailing bytes")
    return out


def to_tensor(name: str, value: ArrayLike) -> tensor_pb2.Tensor:
    """Encode an array-like as a ``Tensor`` with ``raw_contents``, keeping dtype and shape."""
    array = np.asarray(value)
    datatype = wire_dtype(array.dtype)
    if datatype == DataType.BYTES:
        raw = _encode_bytes(array)
    else:
        little = array.dtype.newbyteorder("<")
        raw = np.ascontiguousarray(array, dtype=little).tobytes()
    return tensor_pb2.Tensor(name=name, datatype=datatype, shape=array.shape, raw_contents=raw)


def _decode_bf16(raw: bytes, count: int, name: str, shape: Tuple[int, ...]) -> NDArray[np.float32]:
    if len(raw) != count * 2:
        raise ValueError(f"tensor {name!r}: {len(raw)} bytes do not fit shape {list(shape)} of bfloat16")
    halves = np.frombuffer(raw, dtype=np.dtype("<u2"))
    # A bfloat16 is the upper half of a binary32: put its bits there, zeros below.
    words = halves.astype(np.uint32) << np.uint32(16)
    return words.view(np.float32).reshape(shape)


def from_tensor(tensor: tensor_pb2.Tensor) -> NDArray[Any]:
    """Decode a ``Tensor`` (``raw_contents``) into a numpy array of its dtype and shape.

    Numeric arrays are read-only views of the received bytes; call ``.copy()``
    for a writable one. BF16 tensors, which numpy has no dtype for, decode to a
    new (writable) float32 array holding the same values exactly.
    """
    dtype = numpy_dtype(tensor.datatype)
    shape = tuple(tensor.shape)
    count = int(np.prod(shape, dtype=np.int64))
    if tensor.datatype == DataType.BYTES:
        return _decode_bytes(tensor.raw_contents, count).reshape(shape)
    if tensor.datatype == DataType.BF16:
        return _decode_bf16(tensor.raw_contents, count, tensor.name, shape)
    little = dtype.newbyteorder("<")
    if len(tensor.raw_contents) != count * dtype.itemsize:
        raise ValueError(
            f"tensor {tensor.name!r}: {len(tensor.raw_contents)} bytes do not fit shape {list(shape)} of {dtype}"
        )
    array = np.frombuffer(tensor.raw_contents, dtype=little).reshape(shape)
    if little != dtype:  # big-endian host
        array = array.astype(dtype)
    return array
