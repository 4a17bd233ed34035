"""numpy <-> Tensor conversion and frame encoding, without a server."""

from __future__ import annotations

import numpy as np
import pytest

import inferwire
from inferwire import _wire, tensors
from inferwire._proto import frames_pb2, inference_pb2, tensor_pb2

DTYPES = [
    np.bool_, np.uint8, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64,
    np.uint16, np.uint32, np.uint64,
]


@pytest.mark.parametrize("dtype", DTYPES)
def test_numeric_roundtrip(dtype):
    array = (np.arange(24).reshape(2, 3, 4) % 2 if dtype is np.bool_ else np.arange(24).reshape(2, 3, 4)).astype(dtype)
    tensor = inferwire.to_tensor("t", array)
    assert len(tensor.raw_contents) == array.nbytes
    back = inferwire.from_tensor(tensor)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_little_endian_on_the_wire():
    tensor = inferwire.to_tensor("t", np.array([1.0], dtype=">f4"))  # big-endian input
    assert tensor.raw_contents == b"\x00\x00\x80\x3f"
    assert inferwire.from_tensor(tensor).dtype == np.float32


def test_scalar_and_bytes():
    scalar = inferwire.from_tensor(inferwire.to_tensor("s", np.int32(7)))
    assert scalar.shape == () and scalar == 7
    strings = np.array([[b"a", b""], [b"hello", "w\u00f6rld"]], dtype=object)
    tensor = inferwire.to_tensor("b", strings)
    assert tensor.datatype == inferwire.DataType.BYTES
    assert tensor.raw_contents[:5] == b"\x01\x00\x00\x00a"
    back = inferwire.from_tensor(tensor)
    assert back.shape == (2, 2) and back[1, 1] == "w\u00f6rld".encode()


def test_unsupported_dtype():
    with pytest.raises(TypeError):
        inferwire.to_tensor("c", np.zeros(2, np.complex64))


@pytest.mark.parametrize(
    "dtype, wire, number",
    [(np.uint16, inferwire.DataType.UINT16, 11), (np.uint32, inferwire.DataType.UINT32, 12),
     (np.uint64, inferwire.DataType.UINT64, 13)],
)
def test_unsigned_wire_types(dtype, wire, number):
    """uint16/32/64 travel as UINT16/32/64 (wire numbers 11-13), little-endian, full range both ways."""
    info = np.iinfo(dtype)
    array = np.array([[0, 1], [0x0102, info.max]], dtype=dtype)
    tensor = inferwire.to_tensor("u", array)
    assert tensor.datatype == wire == number
    assert list(tensor.shape) == [2, 2]
    size = np.dtype(dtype).itemsize
    assert len(tensor.raw_contents) == 4 * size
    assert tensor.raw_contents[2 * size : 3 * size] == b"\x02\x01" + b"\x00" * (size - 2)
    assert tensor.raw_contents[3 * size :] == b"\xff" * size
    back = inferwire.from_tensor(tensor)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, array)
    # Big-endian input goes out little-endian all the same.
    assert inferwire.to_tensor("u", array.astype(np.dtype(dtype).newbyteorder(">"))).raw_contents == tensor.raw_contents
    # A received tensor of the type decodes to the numpy dtype.
    received = tensor_pb2.Tensor(name="r", datatype=number, shape=[2], raw_contents=(b"\x01" + b"\x00" * (size - 1)) * 2)
    assert inferwire.from_tensor(received).dtype == dtype
    np.testing.assert_array_equal(inferwire.from_tensor(received), [1, 1])


def bf16_tensor(bits, shape):
    raw = np.asarray(bits, dtype="<u2").tobytes()
    return tensor_pb2.Tensor(name="h", datatype=inferwire.DataType.BF16, shape=shape, raw_contents=raw)


def test_bf16_decodes_to_float32():
    """BF16 (wire number 14) is the upper half of a binary32: decoded, it is that float32 exactly."""
    assert inferwire.DataType.BF16 == 14
    bits = [0x3F80, 0xC000, 0x3F00, 0x4049, 0x0000, 0x8000, 0x7F80, 0xFF80, 0x0001, 0x7F7F]
    expected = np.array(
        [1.0, -2.0, 0.5, 3.140625, 0.0, -0.0, np.inf, -np.inf, 2.0**-133, 3.3895313892515355e38], dtype=np.float32
    )
    back = inferwire.from_tensor(bf16_tensor(bits, [2, 5]))
    assert back.dtype == np.float32 and back.shape == (2, 5)
    np.testing.assert_array_equal(back.reshape(-1), expected)
    assert np.signbit(back.reshape(-1)[5])  # -0.0 keeps its sign
    assert np.isnan(inferwire.from_tensor(bf16_tensor([0x7FC0], [])))


def test_bf16_roundtrip_of_representable_values():
    """float32 values with zero low halves survive float32 -> BF16 bytes -> from_tensor unchanged."""
    rng = np.random.default_rng(7)
    words = rng.integers(0, 1 << 16, size=(3, 4, 5), dtype=np.uint32) << np.uint32(16)
    values = words.view(np.float32)
    values = np.where(np.isnan(values), np.float32(1.5), values)  # NaN != NaN; compare the others
    upper = (values.view(np.uint32) >> np.uint32(16)).astype(np.uint16)
    back = inferwire.from_tensor(bf16_tensor(upper, list(values.shape)))
    assert back.dtype == np.float32 and back.shape == values.shape
    np.testing.assert_array_equal(back.view(np.uint32), values.view(np.uint32))


def test_bf16_scalar_and_length_check():
    scalar = inferwire.from_tensor(bf16_tensor([0x4040], []))
    assert scalar.shape == () and scalar == 3.0
    with pytest.raises(ValueError, match="bfloat16"):
        inferwire.from_tensor(bf16_tensor([0x3F80, 0x3F80], [3]))
    with pytest.raises(ValueError, match="bfloat16"):
        inferwire.from_tensor(
            tensor_pb2.Tensor(name="h", datatype=inferwire.DataType.BF16, shape=[2], raw_contents=b"\x80\x3f\x80")
        )


def test_bf16_is_never_sent():
    """numpy has no bfloat16: float32 goes as FP32, and BF16's numpy dtype is the float32 it decodes to."""
    assert inferwire.to_tensor("f", np.ones(2, np.float32)).datatype == inferwire.DataType.FP32
    assert tensors.numpy_dtype(inferwire.DataType.BF16) == np.float32
    assert tensors.wire_dtype(np.float32) == inferwire.DataType.FP32


def test_unknown_datatype_number():
    with pytest.raises(TypeError, match="unknown InferWire datatype 99"):
        inferwire.from_tensor(tensor_pb2.Tensor(name="x", datatype=99, shape=[1], raw_contents=b"\x00"))


def test_worked_example_bytes():
    """PROTOCOL.md section 8: the REQUEST frame for add_sub, byte for byte."""
    request = inference_pb2.InferRequest(
        model_name="add_sub",
        inputs=[
            inferwire.to_tensor("INPUT0", np.array([[1, 2, 3, 4]], np.float32)),
            inferwire.to_tensor("INPUT1", np.array([[10, 20, 30, 40]], np.float32)),
        ],
    )
    frame = _wire.encode_request(
        frames_pb2.INFER, 1, request.SerializeToString(), timeout=None, compress=False, max_frame_size=1 << 26
    )
    expected = bytes.fromhex(
        "0000004d020000060000000100000000"
        "0a076164645f73756222200a06494e50"
        "55543010081a0201042210000080 3f00".replace(" ", "")
        + "000040000040400000804022200a0649"
        "4e5055543110081a02010422100000 20".replace(" ", "")
        + "410000a0410000f04100002042"
    )
    assert frame == expected
    assert _wire.PREFACE == bytes.fromhex("4957495200010001")


def test_byte_per_element_types_decode_as_their_bytes():
    """INT4/INT2 decode to int8 values, UINT4/UINT2 and the float8/float4 codes to uint8."""
    from inferwire._proto import tensor_pb2

    for name, number, dtype, raw, values in [
        ("INT4", 21, np.int8, bytes([0xF8, 0x07]), [-8, 7]),
        ("UINT4", 22, np.uint8, bytes([0x0F, 0x00]), [15, 0]),
        ("INT2", 23, np.int8, bytes([0xFE, 0x01]), [-2, 1]),
        ("UINT2", 24, np.uint8, bytes([0x03, 0x00]), [3, 0]),
        ("FP8_E4M3FN", 15, np.uint8, bytes([0x38, 0xCC]), [0x38, 0xCC]),
        ("FP4_E2M1", 20, np.uint8, bytes([0x07, 0x0F]), [7, 15]),
    ]:
        assert getattr(inferwire.DataType, name) == number
        tensor = tensor_pb2.Tensor(name="t", datatype=number, shape=[2], raw_contents=raw)
        array = tensors.from_tensor(tensor)
        assert array.dtype == dtype and array.tolist() == values, name
