"""The blocking client against a real server."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import inferwire
from conftest import running_server
from inferwire import _wire

#: A valid W3C traceparent (the example of the Trace Context recommendation) and a tracestate.
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


def add_sub_inputs(a, b):
    return {"INPUT0": np.asarray(a, np.float32), "INPUT1": np.asarray(b, np.float32)}


def test_handshake(client):
    assert client.hello.version == 1
    assert client.hello.max_concurrent_requests > 0
    assert client.server_live()
    assert client.server_ready()
    assert 1 in client.server_metadata().protocol_versions


def test_add_sub_known_answer(client):
    result = client.infer("add_sub", add_sub_inputs([[1, 2, 3, 4]], [[10, 20, 30, 40]]))
    assert result.model_name == "add_sub" and result.model_version == 1
    assert set(result) == {"OUTPUT0", "OUTPUT1"}
    for name in result:
        assert result[name].dtype == np.float32 and result[name].shape == (1, 4)
    np.testing.assert_array_equal(result["OUTPUT0"], [[11, 22, 33, 44]])
    np.testing.assert_array_equal(result["OUTPUT1"], [[-9, -18, -27, -36]])


def test_batch_and_output_selection(client):
    a = np.arange(32, dtype=np.float32).reshape(8, 4)
    b = np.full((8, 4), 0.5, np.float32)
    result = client.infer("add_sub", add_sub_inputs(a, b), outputs=["OUTPUT1"], version=1, request_id="r-1")
    assert list(result) == ["OUTPUT1"] and result.id == "r-1"
    np.testing.assert_array_equal(result["OUTPUT1"], a - b)


def test_onnx_dtypes(client):
    x = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    result = client.infer("fraud", {"X": x}, version="stable")
    assert result["label"].dtype == np.int64 and result["label"].shape == (5,)
    assert result["probabilities"].dtype == np.float32 and result["probabilities"].shape == (5, 2)
    np.testing.assert_allclose(result["probabilities"].sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(result["label"], result["probabilities"].argmax(axis=1))


def test_model_metadata_and_ready(client):
    meta = client.model_metadata("fraud")
    assert list(meta.versions) == [1, 2]
    assert [(i.name, i.datatype, list(i.shape)) for i in meta.inputs] == [("X", inferwire.DataType.FP32, [-1, 8])]
    assert client.model_ready("add_sub")
    assert not client.model_ready("no_such_model")


def test_server_not_ready_reasons_empty_when_ready(client):
    assert client.server_ready()
    assert client.server_not_ready_reasons() == []


def test_server_not_ready_reasons(tmp_path):
    # A version that fails to load keeps the server not ready; the answer says why.
    def add_broken_model(repository: Path) -> None:
        (repository / "broken" / "1").mkdir(parents=True)
        (repository / "broken" / "1" / "model.onnx").write_bytes(b"not onnx")
        (repository / "broken" / "config.pbtxt").write_text('name: "broken"\nplatform: "onnx"\n')

    with running_server(tmp_path, prepare=add_broken_model) as address, inferwire.Client(*address, timeout=30) as c:
        assert not c.server_ready()
        reasons = c.server_not_ready_reasons()
        assert reasons and all(isinstance(reason, str) and reason for reason in reasons)
        assert any("broken" in reason for reason in reasons), reasons
        assert c.infer("add_sub", add_sub_inputs([[1] * 4], [[1] * 4]))["OUTPUT0"].sum() == 8  # the others serve


def test_infer_with_trace_context(client):
    result = client.infer(
        "add_sub", add_sub_inputs([[1, 2, 3, 4]], [[10, 20, 30, 40]]), traceparent=TRACEPARENT,
        tracestate=TRACESTATE, request_id="traced",
    )
    assert result.id == "traced"
    np.testing.assert_array_equal(result["OUTPUT0"], [[11, 22, 33, 44]])
    np.testing.assert_array_equal(result["OUTPUT1"], [[-9, -18, -27, -36]])
    # The server ignores a traceparent it cannot parse: the request is served, never refused.
    for invalid in ("not a traceparent", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", TRACEPARENT.upper()):
        result = client.infer("add_sub", add_sub_inputs([[1] * 4], [[2] * 4]), traceparent=invalid, tracestate="x")
        np.testing.assert_array_equal(result["OUTPUT0"], [[3] * 4])


def test_trace_context_reaches_the_server(tmp_path):
    # With an access log of every request (JSON lines), the traced request's line carries the
    # trace id and parent span id that were sent; the untraced one has none.
    with running_server(tmp_path, "--access-log-rate", "1", "--log-format", "json") as address:
        with inferwire.Client(*address, timeout=30) as c:
            inputs = add_sub_inputs([[1] * 4], [[1] * 4])
            c.infer("add_sub", inputs, traceparent=TRACEPARENT, tracestate=TRACESTATE, request_id="traced")
            c.infer("add_sub", inputs, request_id="untraced")
        records = {}
        deadline = time.monotonic() + 10
        while len(records) < 2 and time.monotonic() < deadline:
            for line in (tmp_path / "server.log").read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    record = json.loads(line)
                    if record.get("message") == "infer" and "request_id" in record:
                        records[record["request_id"]] = record
            time.sleep(0.05)
    assert set(records) == {"traced", "untraced"}, records
    assert records["traced"]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert records["traced"]["parent_span_id"] == "00f067aa0ba902b7"
    assert records["traced"]["code"] == "OK"
    assert "trace_id" not in records["untraced"]


def test_unknown_model_is_not_found(client):
    with pytest.raises(inferwire.NotFoundError) as info:
        client.infer("no_such_model", add_sub_inputs([[0] * 4], [[0] * 4]))
    assert info.value.code == inferwire.StatusCode.NOT_FOUND
    assert "no_such_model" in info.value.message
    with pytest.raises(inferwire.NotFoundError):
        client.model_status("no_such_model")


def test_wrong_dtype_is_invalid_argument(client):
    with pytest.raises(inferwire.InvalidArgumentError) as info:
        client.infer("add_sub", {"INPUT0": np.zeros((1, 4)), "INPUT1": np.zeros((1, 4))})  # FP64
    assert isinstance(info.value, inferwire.InferWireError)
    assert info.value.code == inferwire.StatusCode.INVALID_ARGUMENT
    # The connection carries on after a per-request error.
    assert client.infer("add_sub", add_sub_inputs([[1] * 4], [[1] * 4]))["OUTPUT0"].sum() == 8


def test_threads_share_one_connection(client):
    def work(worker):
        for i in range(40):
            a = np.full((1 + i % 4, 4), worker * 1000 + i, np.float32)
            result = client.infer("add_sub", add_sub_inputs(a, np.ones_like(a)))
            np.testing.assert_array_equal(result["OUTPUT0"], a + 1)
            np.testing.assert_array_equal(result["OUTPUT1"], a - 1)

    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(work, range(32)))
    assert not client._pending


def test_deadline(client):
    big = {"X": np.zeros((64, 32), np.float32)}
    with pytest.raises(inferwire.DeadlineExceededError):
        client.infer("mlp", big, timeout=1e-6)
    # The cancelled request's id is released when the server's CANCELLED/answer arrives.
    deadline = time.monotonic() + 5
    while client._pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not client._pending
    assert client.infer("mlp", big, timeout=10)["label"].shape == (64,)


def test_timeout_field():
    assert _wire.timeout_to_us(None) == 0
    assert _wire.timeout_to_us(0.25) == 250_000
    assert _wire.timeout_to_us(1e-9) == 1
    assert _wire.timeout_to_us(10**6) == 0xFFFFFFFF


def test_compression(client, monkeypatch):
    inflated = []
    real_inflate = _wire.inflate

    def spy(payload, limit):
        data = real_inflate(payload, limit)
        inflated.append((len(payload), len(data)))
        return data

    monkeypatch.setattr(_wire, "inflate", spy)
    assert client.hello.compression
    x = np.tile(np.arange(16, dtype=np.float32), (64, 1))
    result = client.infer("identity", {"INPUT0": x}, compress=True)
    np.testing.assert_array_equal(result["OUTPUT0"], x)
    assert inflated and inflated[0][0] < inflated[0][1]  # the response came compressed
    # Small responses (< 256 bytes) are sent plain even when compression is asked for.
    inflated.clear()
    client.infer("add_sub", add_sub_inputs([[1] * 4], [[2] * 4]), compress=True)
    assert not inflated


def test_rollout(client):
    status = client.model_status("fraud")
    assert {v.version: v.state for v in status.versions} == {1: inferwire.VersionState.READY,
                                                              2: inferwire.VersionState.READY}
    assert status.rollout.stable_version == 2 and status.rollout.canary_version == 0
    x = {"X": np.zeros((1, 8), np.float32)}

    rollout = client.set_traffic("fraud", 1, 1)
    assert (rollout.stable_version, rollout.canary_version, rollout.canary_percent) == (2, 1, 1)
    assert client.model_status("fraud").rollout.canary_version == 1
    assert client.infer("fraud", x, version="canary").model_version == 1
    assert client.infer("fraud", x, version="stable").model_version == 2

    rollout = client.promote("fraud")
    assert (rollout.stable_version, rollout.canary_version, rollout.previous_stable_version) == (1, 0, 2)
    assert client.model_status("fraud").rollout.stable_version == 1
    assert client.infer("fraud", x).model_version == 1

    rollout = client.rollback("fraud")
    assert rollout.stable_version == 2 and rollout.canary_version == 0
    status = client.model_status("fraud")
    assert status.rollout.stable_version == 2
    assert all(v.state == inferwire.VersionState.READY for v in status.versions)
    assert client.infer("fraud", x).model_version == 2

    actions = [entry.action for entry in client.history("fraud") if entry.actor == "api"]
    assert actions[-3:] == ["traffic", "promote", "rollback"]
    with pytest.raises(inferwire.FailedPreconditionError):
        client.promote("fraud")  # no canary any more
    assert "fraud" in {m.name for m in client.list_models()}


def test_load_unload(client):
    with pytest.raises(inferwire.NotFoundError):
        client.load_model("no_such_model", 1)
    with pytest.raises(inferwire.FailedPreconditionError):
        client.unload_model("add_sub", 1)  # the stable version


def test_closed_client_refuses_calls(server):
    c = inferwire.Client(*server)
    c.close()
    with pytest.raises(inferwire.UnavailableError):
        c.server_live()


def test_bad_preface_is_refused(server):
    # A server speaking only version 1 refuses a client asking for 2..3 with GOAWAY.
    import socket

    with socket.create_connection(server, timeout=5) as sock:
        sock.sendall(b"IWIR\x00\x02\x00\x03")
        header = sock.recv(16)
        assert header[4] == _wire.GOAWAY
