"""numpy <-> Tensor conversion and frame encoding, without a server."""

from __future__ import annotations

import numpy as np
import pytest

import inferwire
from inferwire import _wire
from inferwire._proto import frames_pb2, inference_pb2

DTYPES = [np.bool_, np.uint8, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64]


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
        inferwire.to_tensor("u", np.zeros(2, np.uint32))


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
