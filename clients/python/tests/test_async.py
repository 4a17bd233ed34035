"""The asyncio client against a real server."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import inferwire


def run(coro):
    return asyncio.run(coro)


def test_async_known_answer_and_errors(server):
    async def main():
        async with inferwire.AsyncClient(*server, timeout=30) as client:
            assert await client.server_live()
            result = await client.infer(
                "add_sub",
                {"INPUT0": np.array([[1, 2, 3, 4]], np.float32), "INPUT1": np.array([[10, 20, 30, 40]], np.float32)},
            )
            np.testing.assert_array_equal(result["OUTPUT0"], [[11, 22, 33, 44]])
            np.testing.assert_array_equal(result["OUTPUT1"], [[-9, -18, -27, -36]])
            with pytest.raises(inferwire.NotFoundError):
                await client.infer("no_such_model", {"X": np.zeros((1, 8), np.float32)})
            with pytest.raises(inferwire.InvalidArgumentError):
                await client.infer("fraud", {"X": np.zeros((1, 8), np.int32)})
            assert (await client.model_status("fraud")).name == "fraud"

    run(main())


def test_async_trace_context_and_ready_reasons(server):
    async def main():
        async with inferwire.AsyncClient(*server, timeout=30) as client:
            assert await client.server_ready()
            assert await client.server_not_ready_reasons() == []
            a = np.array([[1, 2, 3, 4]], np.float32)
            for traceparent in ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "invalid"):
                result = await client.infer(
                    "add_sub", {"INPUT0": a, "INPUT1": a}, traceparent=traceparent, tracestate="congo=t61rcWkgMzE",
                    request_id=traceparent,
                )
                assert result.id == traceparent
                np.testing.assert_array_equal(result["OUTPUT0"], 2 * a)

    run(main())


def test_async_many_tasks_one_connection(server):
    async def one(client, i):
        a = np.full((1 + i % 3, 4), i, np.float32)
        result = await client.infer("add_sub", {"INPUT0": a, "INPUT1": a}, compress=i % 2 == 0)
        np.testing.assert_array_equal(result["OUTPUT0"], 2 * a)
        np.testing.assert_array_equal(result["OUTPUT1"], 0 * a)

    async def main():
        client = await inferwire.AsyncClient.connect(*server)
        try:
            await asyncio.gather(*(one(client, i) for i in range(1000)))
            assert not client._pending
        finally:
            await client.close()

    run(main())


def test_async_deadline(server):
    async def main():
        async with inferwire.AsyncClient(*server) as client:
            with pytest.raises(inferwire.DeadlineExceededError):
                await client.infer("mlp", {"X": np.zeros((64, 32), np.float32)}, timeout=1e-6)
            for _ in range(500):
                if not client._pending:
                    break
                await asyncio.sleep(0.01)
            assert not client._pending
            assert await client.server_ready(timeout=5)

    run(main())
