"""Authentication and roles (PROTOCOL.md section 1b) against real servers.

``auth_server`` speaks TLS and takes tokens from its token file and HS256 JWTs (crafted
here with hmac/hashlib) whose issuer and audience it checks. The token file grants
``deployer`` every role, ``app`` the infer role on ``add_sub`` and ``ident*``, and
``watcher`` the manage role.
"""

from __future__ import annotations

import asyncio
import socket
import time

import numpy as np
import pytest

import inferwire
from inferwire import _wire
from inferwire._proto import inference_pb2


def add_sub_inputs(a, b):
    return {"INPUT0": np.asarray(a, np.float32), "INPUT1": np.asarray(b, np.float32)}


def assert_add_sub_works(client):
    result = client.infer("add_sub", add_sub_inputs([[1, 2, 3, 4]], [[10, 20, 30, 40]]))
    np.testing.assert_array_equal(result["OUTPUT0"], [[11, 22, 33, 44]])


MLP_INPUT = {"X": np.zeros((1, 32), np.float32)}


@pytest.fixture
def connect(auth_server, pki):
    """Opens a TLS client to ``auth_server`` presenting ``token``; closes it afterwards."""
    opened = []

    def open_client(token=None, **options):
        client = inferwire.Client(*auth_server, tls_ca=pki.ca, token=token, timeout=30, **options)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


# -- tokens from the token file -------------------------------------------------------------


def test_token_authenticates(connect, credentials):
    client = connect(credentials.tokens["app"])
    assert client.hello.authentication_required
    assert client.principal == inferwire.Principal(
        name="app", roles=("infer",), models=("add_sub", "ident*"), expires_unix_seconds=0
    )
    assert client.principal.expires is None
    assert client.principal.may_reach("add_sub") and client.principal.may_reach("identity")
    assert not client.principal.may_reach("mlp")
    assert client.server_live()
    assert_add_sub_works(client)
    x = np.ones((2, 16), np.float32)
    np.testing.assert_array_equal(client.infer("identity", {"INPUT0": x})["OUTPUT0"], x)


def test_bad_token_is_refused_at_connect(auth_server, pki):
    with pytest.raises(inferwire.UnauthenticatedError) as info:
        inferwire.Client(*auth_server, tls_ca=pki.ca, token="not-a-listed-token")
    assert "token file" in info.value.message  # the server says which check failed


def test_no_token_is_refused_at_connect(auth_server, plain_auth_server, pki):
    for address, options in ((auth_server, {"tls_ca": pki.ca}), (plain_auth_server, {})):
        with pytest.raises(inferwire.UnauthenticatedError) as info:
            inferwire.Client(*address, **options)
        assert "requires authentication" in info.value.message and "token=" in info.value.message


def test_request_outside_role_is_denied_and_connection_carries_on(connect, credentials):
    app = connect(credentials.tokens["app"])
    with pytest.raises(inferwire.PermissionDeniedError) as info:
        app.list_models()  # manage
    assert "app" in info.value.message
    with pytest.raises(inferwire.PermissionDeniedError):
        app.unload_model("add_sub", 1)  # admin
    assert_add_sub_works(app)

    watcher = connect(credentials.tokens["watcher"])
    with pytest.raises(inferwire.PermissionDeniedError) as info:
        watcher.infer("add_sub", add_sub_inputs([[0] * 4], [[0] * 4]))
    assert "watcher" in info.value.message
    assert "add_sub" in {m.name for m in watcher.list_models()}
    assert watcher.server_live()  # any authenticated principal


def test_model_outside_principal_models_is_denied(connect, credentials):
    app = connect(credentials.tokens["app"])
    with pytest.raises(inferwire.PermissionDeniedError) as info:
        app.infer("mlp", MLP_INPUT)
    assert "mlp" in info.value.message
    with pytest.raises(inferwire.PermissionDeniedError):
        app.model_metadata("fraud")
    assert {s.name for s in app.model_statistics()} <= {"add_sub", "identity"}
    assert_add_sub_works(app)


def test_token_over_plaintext(plain_auth_server, credentials):
    with inferwire.Client(*plain_auth_server, token=credentials.tokens["deployer"], timeout=30) as client:
        assert client.tls_version is None
        assert client.principal is not None and client.principal.name == "deployer"
        assert set(client.principal.roles) == {"infer", "manage", "admin"} and client.principal.models == ()
        assert client.infer("mlp", MLP_INPUT)["label"].shape == (1,)


def test_token_to_server_without_authentication(server):
    with inferwire.Client(*server, token="anything") as client:
        assert not client.hello.authentication_required
        assert client.principal is not None and client.principal.name == "anonymous"
        assert set(client.principal.roles) == {"infer", "manage", "admin"}
        assert client.server_live()


def test_requests_before_authenticating_are_unauthenticated(plain_auth_server):
    # A client that predates AUTH: its requests are answered ERROR UNAUTHENTICATED, PING still PONG.
    with socket.create_connection(plain_auth_server, timeout=10) as sock:
        reader = sock.makefile("rb")
        sock.sendall(
            _wire.PREFACE
            + _wire.encode_frame(_wire.PING, b"hi")
            + _wire.encode_request(1, 1, inference_pb2.ServerLiveRequest().SerializeToString(), timeout=None,
                                   compress=False, max_frame_size=1 << 20)
        )
        answers = {}
        while len(answers) < 3:
            length, frame_type, _, _, request_id, _ = _wire.HEADER.unpack(reader.read(_wire.HEADER_SIZE))
            answers[frame_type] = (request_id, reader.read(length))
        assert _wire.parse_hello(answers[_wire.HELLO][1]).authentication_required
        assert answers[_wire.PONG][1] == b"hi"
        request_id, payload = answers[_wire.ERROR]
        error = _wire.error_from_status(payload)
        assert request_id == 1 and isinstance(error, inferwire.UnauthenticatedError)
        assert "AUTH" in error.message


# -- JWTs -------------------------------------------------------------------------------


def test_jwt_authenticates(connect, credentials):
    expires = int(time.time()) + 600
    token = credentials.jwt(sub="pipeline", exp=expires, roles=["infer", "manage"], models=["add_sub"])
    client = connect(token)
    principal = client.principal
    assert principal is not None and principal.name == "pipeline"
    assert set(principal.roles) == {"infer", "manage"} and principal.models == ("add_sub",)
    assert principal.expires_unix_seconds == expires
    assert principal.expires is not None and int(principal.expires.timestamp()) == expires
    assert_add_sub_works(client)
    with pytest.raises(inferwire.PermissionDeniedError):
        client.infer("mlp", MLP_INPUT)


def test_expired_jwt_is_refused(auth_server, pki, credentials):
    token = credentials.jwt(sub="pipeline", exp=int(time.time()) - 60, roles=["infer"])
    with pytest.raises(inferwire.UnauthenticatedError, match="expired"):
        inferwire.Client(*auth_server, tls_ca=pki.ca, token=token)


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"secret": b"some other secret, 32 bytes long"}, "signature"),
        ({"aud": "somebody-else"}, "audience"),
        ({"iss": "somebody-else"}, "issuer"),
        ({"nbf": int(time.time()) + 3600}, "not valid before"),
        ({"roles": []}, "no role"),
    ],
)
def test_bad_jwt_is_refused_saying_why(auth_server, pki, credentials, change, reason):
    claims = {"sub": "pipeline", "exp": int(time.time()) + 600, "roles": ["infer"], **change}
    with pytest.raises(inferwire.UnauthenticatedError, match=reason):
        inferwire.Client(*auth_server, tls_ca=pki.ca, token=credentials.jwt(**claims))


# -- on an open connection -----------------------------------------------------------------


def test_authenticate_again_changes_principal(connect, credentials):
    client = connect(credentials.tokens["app"])
    with pytest.raises(inferwire.PermissionDeniedError):
        client.list_models()
    principal = client.authenticate(credentials.tokens["deployer"])
    assert principal.name == "deployer" and client.principal == principal
    assert "mlp" in {m.name for m in client.list_models()}
    # Credentials the server refuses end the connection; the next call reconnects with the ones it accepted.
    with pytest.raises(inferwire.UnauthenticatedError, match="token file"):
        client.authenticate("not-a-listed-token")
    assert not client.connected and client.connections_opened == 1
    assert "mlp" in {m.name for m in client.list_models()}
    assert client.principal is not None and client.principal.name == "deployer"
    assert client.connections_opened == 2


def test_expiring_jwt_renewed_on_the_same_connection(connect, credentials):
    client = connect(credentials.jwt(sub="short-lived", exp=int(time.time()) + 2, roles=["infer"]))
    assert client.principal is not None and client.principal.name == "short-lived"
    # Once the JWT expires the server answers requests UNAUTHENTICATED (bounded wait for the clock).
    deadline = time.monotonic() + 15
    while True:
        try:
            client.model_ready("add_sub")
        except inferwire.UnauthenticatedError as error:
            assert "expired" in error.message
            break
        assert time.monotonic() < deadline, "credentials did not expire on the server"
        time.sleep(0.2)
    fresh = credentials.jwt(sub="short-lived", exp=int(time.time()) + 600, roles=["infer"])
    assert client.authenticate(fresh).expires_unix_seconds > time.time() + 500
    assert_add_sub_works(client)


def test_history_records_principal(connect, credentials):
    client = connect(credentials.tokens["deployer"])
    client.set_traffic("fraud", 1, 10)
    client.rollback("fraud")
    entries = [entry for entry in client.history("fraud") if entry.actor == "api"]
    assert [entry.action for entry in entries[-2:]] == ["traffic", "rollback"]
    assert all(entry.principal == "deployer" for entry in entries[-2:])


# -- asyncio --------------------------------------------------------------------------------


def test_async_authentication(auth_server, pki, credentials):
    async def main():
        async with inferwire.AsyncClient(*auth_server, tls_ca=pki.ca, token=credentials.tokens["app"]) as client:
            assert client.principal is not None and client.principal.name == "app"
            assert await client.model_ready("add_sub")
            with pytest.raises(inferwire.PermissionDeniedError):
                await client.infer("mlp", MLP_INPUT)
            with pytest.raises(inferwire.PermissionDeniedError):
                await client.list_models()
            assert (await client.authenticate(credentials.tokens["deployer"])).name == "deployer"
            assert len(await client.list_models()) >= 5
            with pytest.raises(inferwire.UnauthenticatedError):
                await client.authenticate("not-a-listed-token")
            # The refused credentials ended the connection; the next call reconnects as "deployer".
            assert not client.connected
            assert len(await client.list_models()) >= 5
            assert client.principal is not None and client.principal.name == "deployer"
            assert client.connections_opened == 2

        with pytest.raises(inferwire.UnauthenticatedError, match="token file"):
            await inferwire.AsyncClient.connect(*auth_server, tls_ca=pki.ca, token="not-a-listed-token")
        with pytest.raises(inferwire.UnauthenticatedError, match="requires authentication"):
            await inferwire.AsyncClient.connect(*auth_server, tls_ca=pki.ca)
        expired = credentials.jwt(sub="x", exp=int(time.time()) - 5, roles=["infer"])
        with pytest.raises(inferwire.UnauthenticatedError, match="expired"):
            await inferwire.AsyncClient.connect(*auth_server, tls_ca=pki.ca, token=expired)

    asyncio.run(main())


def test_token_argument_checked(server):
    with pytest.raises(ValueError, match="empty"):
        inferwire.Client(*server, token="")
    with pytest.raises(TypeError):
        inferwire.AsyncClient(*server, token=b"bytes")  # type: ignore[arg-type]
