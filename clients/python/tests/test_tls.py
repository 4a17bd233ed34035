"""TLS (PROTOCOL.md section 1a) against real servers, with certificates made by openssl at test time."""

from __future__ import annotations

import asyncio
import io
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import inferwire
from inferwire import _tls
from inferwire.client import _TLSStream


def add_sub_inputs(a, b):
    return {"INPUT0": np.asarray(a, np.float32), "INPUT1": np.asarray(b, np.float32)}


def assert_add_sub_works(client):
    result = client.infer("add_sub", add_sub_inputs([[1, 2, 3, 4]], [[10, 20, 30, 40]]))
    np.testing.assert_array_equal(result["OUTPUT0"], [[11, 22, 33, 44]])
    np.testing.assert_array_equal(result["OUTPUT1"], [[-9, -18, -27, -36]])


@pytest.fixture(scope="module")
def expired_server(launch, pki):
    return launch("--tls-cert", str(pki.expired.cert), "--tls-key", str(pki.expired.key))


@pytest.fixture(scope="module")
def wrong_host_server(launch, pki):
    return launch("--tls-cert", str(pki.wrong_host.cert), "--tls-key", str(pki.wrong_host.key))


# -- working connections ------------------------------------------------------------


def test_tls_infer(tls_server, pki):
    with inferwire.Client(*tls_server, tls_ca=pki.ca, timeout=30) as client:
        assert client.tls_version in ("TLSv1.2", "TLSv1.3")
        assert not client.hello.authentication_required
        assert client.principal is None
        assert client.server_live() and client.server_ready()
        assert_add_sub_works(client)
        with pytest.raises(inferwire.NotFoundError):
            client.infer("no_such_model", add_sub_inputs([[0] * 4], [[0] * 4]))
        assert_add_sub_works(client)


def test_tls_many_threads(tls_server, pki):
    # Sending threads and the reader thread share one TLS connection.
    with inferwire.Client(*tls_server, tls_ca=pki.ca, timeout=60) as client:

        def work(worker):
            rng = np.random.default_rng(worker)
            for i in range(40):
                x = rng.normal(size=(1 + (worker + i) % 64, 16)).astype(np.float32)
                result = client.infer("identity", {"INPUT0": x}, compress=i % 2 == 1)
                np.testing.assert_array_equal(result["OUTPUT0"], x)

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(work, range(16)))
        assert not client._pending


def test_tls_stream_carries_large_frames_whole(pki):
    # The example models take small tensors; frames over a TLS record and over the client's
    # encryption chunk go through an echo server (Python's ssl) here instead.
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(pki.server.cert, pki.server.key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def echo():
        raw, _ = listener.accept()
        with server_context.wrap_socket(raw, server_side=True) as conn:
            while True:
                data = conn.recv(1 << 16)
                if not data:
                    break
                conn.sendall(data)

    echoer = threading.Thread(target=echo, daemon=True)
    echoer.start()
    context = _tls.make_context(True, ca=pki.ca)
    assert context is not None
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    stream = _TLSStream(sock, context, "127.0.0.1")
    stream.handshake()
    reader = io.BufferedReader(stream)
    frames = [bytes([n]) * (100_000 * n + 7) for n in range(1, 9)]  # up to ~800 KB, several 256 KiB chunks
    with ThreadPoolExecutor(max_workers=8) as pool:
        sending = [pool.submit(stream.sendall, frame) for frame in frames]
        received = []
        for _ in frames:
            first = reader.read(1)
            size = 100_000 * first[0] + 7
            received.append(first + reader.read(size - 1))
        for future in sending:
            future.result()
    assert sorted(received) == sorted(frames)  # each frame whole, none interleaved with another
    stream.close_notify()
    sock.close()
    listener.close()
    echoer.join(timeout=10)


def test_tls_ssl_context_and_server_hostname(tls_server, pki):
    context = ssl.create_default_context(cafile=str(pki.ca))
    with inferwire.Client(*tls_server, tls=context) as client:
        assert_add_sub_works(client)
        assert client._tls is not None and client._tls.tls.selected_alpn_protocol() == "inferwire/1"
    # The certificate also names localhost: verifying that name while connecting to the IP works.
    with inferwire.Client(*tls_server, tls_ca=pki.ca, server_hostname="localhost") as client:
        assert client.server_live()


def test_tls_async(tls_server, pki):
    async def main():
        async with inferwire.AsyncClient(*tls_server, tls_ca=pki.ca, timeout=30) as client:
            assert client.tls_version in ("TLSv1.2", "TLSv1.3")
            assert client.principal is None
            results = await asyncio.gather(
                *(client.infer("add_sub", add_sub_inputs([[i] * 4], [[1] * 4])) for i in range(200))
            )
            assert [float(r["OUTPUT0"][0, 0]) for r in results] == [i + 1.0 for i in range(200)]
            x = np.arange(64 * 16, dtype=np.float32).reshape(64, 16)
            np.testing.assert_array_equal((await client.infer("identity", {"INPUT0": x}))["OUTPUT0"], x)

    asyncio.run(main())


# -- verification ---------------------------------------------------------------------


def test_verification_is_on_by_default(tls_server, pki):
    # tls=True trusts the system's roots, which do not include the test CA.
    with pytest.raises(inferwire.TLSHandshakeError) as info:
        inferwire.Client(*tls_server, tls=True)
    message = info.value.message
    assert "TLS handshake" in message and "certificate verify failed" in message
    assert f"{tls_server[0]}:{tls_server[1]}" in message
    assert isinstance(info.value, inferwire.UnavailableError)
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)

    # So does a default SSLContext handed over as it is.
    with pytest.raises(inferwire.TLSHandshakeError, match="certificate verify failed"):
        inferwire.Client(*tls_server, tls=ssl.create_default_context())

    async def main():
        with pytest.raises(inferwire.TLSHandshakeError, match="certificate verify failed"):
            await inferwire.AsyncClient.connect(*tls_server, tls=True)

    asyncio.run(main())


def test_untrusted_ca(tls_server, pki):
    # Trusting only another CA: the server's certificate does not chain to it.
    with pytest.raises(inferwire.TLSHandshakeError, match="certificate verify failed: unable to get local issuer"):
        inferwire.Client(*tls_server, tls_ca=pki.other_ca)


def test_wrong_hostname(wrong_host_server, tls_server, pki):
    with pytest.raises(inferwire.TLSHandshakeError) as info:
        inferwire.Client(*wrong_host_server, tls_ca=pki.ca)
    assert "certificate verify failed" in info.value.message
    assert "mismatch" in info.value.message and "127.0.0.1" in info.value.message
    # The certificate is good for other.example: saying that is the way to connect.
    with inferwire.Client(*wrong_host_server, tls_ca=pki.ca, server_hostname="other.example") as client:
        assert client.server_live()
    # A name the server's certificate does not list.
    with pytest.raises(inferwire.TLSHandshakeError, match="Hostname mismatch"):
        inferwire.Client(*tls_server, tls_ca=pki.ca, server_hostname="inferwire.example")

    async def main():
        with pytest.raises(inferwire.TLSHandshakeError, match="mismatch"):
            await inferwire.AsyncClient.connect(*wrong_host_server, tls_ca=pki.ca)

    asyncio.run(main())


def test_expired_certificate(expired_server, pki):
    with pytest.raises(inferwire.TLSHandshakeError, match="certificate verify failed: certificate has expired"):
        inferwire.Client(*expired_server, tls_ca=pki.ca)

    async def main():
        with pytest.raises(inferwire.TLSHandshakeError, match="certificate has expired"):
            await inferwire.AsyncClient.connect(*expired_server, tls_ca=pki.ca)

    asyncio.run(main())


# -- mutual TLS -------------------------------------------------------------------------


def test_mtls_without_client_certificate_fails(mtls_server, pki):
    with pytest.raises(inferwire.TLSHandshakeError) as info:
        inferwire.Client(*mtls_server, tls_ca=pki.ca, timeout=10)
    assert "TLS handshake" in info.value.message and "client certificate" in info.value.message

    async def main():
        with pytest.raises(inferwire.TLSHandshakeError, match="client certificate"):
            await inferwire.AsyncClient.connect(*mtls_server, tls_ca=pki.ca)

    asyncio.run(main())


def test_mtls_client_certificate_from_another_ca_fails(mtls_server, pki):
    cert = pki.untrusted_client
    with pytest.raises(inferwire.TLSHandshakeError) as info:
        inferwire.Client(*mtls_server, tls_ca=pki.ca, tls_cert=cert.cert, tls_key=cert.key)
    assert "TLS handshake" in info.value.message and "client certificate" in info.value.message


def test_mtls_certificate_principal(mtls_server, pki):
    cert = pki.clients["ci-runner"]
    with inferwire.Client(*mtls_server, tls_ca=pki.ca, tls_cert=cert.cert, tls_key=cert.key, timeout=30) as client:
        # The token file's "certificate ci-runner infer,manage identity,add_sub" line, from HELLO.
        assert client.hello.authentication_required
        assert client.hello.HasField("principal")
        principal = client.principal
        assert principal is not None and principal.name == "ci-runner"
        assert set(principal.roles) == {"infer", "manage"}
        assert set(principal.models) == {"identity", "add_sub"}
        assert principal.expires is None
        assert_add_sub_works(client)
        assert {m.name for m in client.list_models()} == {"identity", "add_sub"}
        with pytest.raises(inferwire.PermissionDeniedError):
            client.infer("mlp", {"X": np.zeros((1, 32), np.float32)})
        with pytest.raises(inferwire.PermissionDeniedError):
            client.load_model("add_sub", 1)  # admin
        assert_add_sub_works(client)


def test_mtls_certificate_not_in_token_file(mtls_server, pki, credentials):
    cert = pki.clients["stranger"]
    with pytest.raises(inferwire.UnauthenticatedError, match="requires authentication"):
        inferwire.Client(*mtls_server, tls_ca=pki.ca, tls_cert=cert.cert, tls_key=cert.key)
    # A token authenticates the connection the certificate did not.
    with inferwire.Client(
        *mtls_server, tls_ca=pki.ca, tls_cert=cert.cert, tls_key=cert.key, token=credentials.tokens["app"]
    ) as client:
        assert client.principal is not None and client.principal.name == "app"
        assert_add_sub_works(client)


def test_mtls_token_replaces_certificate_principal(mtls_server, pki, credentials):
    cert = pki.clients["ci-runner"]
    with inferwire.Client(
        *mtls_server, tls_ca=pki.ca, tls_cert=cert.cert, tls_key=cert.key, token=credentials.tokens["deployer"]
    ) as client:
        assert client.hello.principal.name == "ci-runner"
        assert client.principal is not None and client.principal.name == "deployer"
        assert client.infer("mlp", {"X": np.zeros((1, 32), np.float32)})["label"].shape == (1,)


def test_mtls_async(mtls_server, pki):
    cert = pki.clients["ci-runner"]

    async def main():
        async with inferwire.AsyncClient(*mtls_server, tls_ca=pki.ca, tls_cert=cert.cert, tls_key=cert.key) as client:
            assert client.principal is not None and client.principal.name == "ci-runner"
            assert await client.model_ready("add_sub")
            with pytest.raises(inferwire.PermissionDeniedError):
                await client.model_metadata("mlp")

    asyncio.run(main())


# -- the wrong protocol on a port --------------------------------------------------------


def test_plaintext_client_to_tls_port(tls_server):
    with pytest.raises(inferwire.FailedPreconditionError, match="requires TLS"):
        inferwire.Client(*tls_server)

    async def main():
        with pytest.raises(inferwire.FailedPreconditionError, match="requires TLS"):
            await inferwire.AsyncClient.connect(*tls_server)

    asyncio.run(main())


def test_tls_client_to_plaintext_port(server, pki):
    expected = f"the server at {server[0]}:{server[1]} does not speak TLS on this port"
    with pytest.raises(inferwire.TLSHandshakeError) as info:
        inferwire.Client(*server, tls_ca=pki.ca)
    assert expected in info.value.message

    async def main():
        with pytest.raises(inferwire.TLSHandshakeError) as info:
            await inferwire.AsyncClient.connect(*server, tls_ca=pki.ca)
        assert expected in info.value.message

    asyncio.run(main())


# -- arguments (no server) ---------------------------------------------------------------


def test_tls_arguments(pki):
    assert _tls.make_context(None) is None and _tls.make_context(False) is None
    context = _tls.make_context(None, ca=pki.ca)  # a CA file implies TLS
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    default = _tls.make_context(True)
    assert default is not None and default.verify_mode == ssl.CERT_REQUIRED and default.check_hostname
    given = ssl.create_default_context()
    assert _tls.make_context(given) is given
    with pytest.raises(ValueError, match="tls=False"):
        inferwire.Client("127.0.0.1", 1, tls=False, tls_ca=pki.ca)
    with pytest.raises(ValueError, match="not both"):
        inferwire.Client("127.0.0.1", 1, tls=given, tls_ca=pki.ca)
    with pytest.raises(ValueError, match="tls_key needs tls_cert"):
        inferwire.Client("127.0.0.1", 1, tls=True, tls_key=pki.server.key)
    with pytest.raises(ValueError, match="server_hostname"):
        inferwire.AsyncClient("127.0.0.1", 1, server_hostname="localhost")
    with pytest.raises(TypeError):
        inferwire.Client("127.0.0.1", 1, tls="yes")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        inferwire.Client("127.0.0.1", 1, tls_ca=pki.ca.parent / "missing.pem")
