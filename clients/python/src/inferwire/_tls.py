"""TLS for both clients (PROTOCOL.md section 1a): the SSLContext they use, and what a
failed handshake is reported as.

Certificate and host name verification are on unless the caller hands over an
``ssl.SSLContext`` configured otherwise; nothing here turns them off.
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import Optional, Union

from .errors import InferWireError, TLSHandshakeError

#: The ALPN protocol name InferWire servers select.
ALPN = "inferwire/1"

#: What ``tls=`` accepts: a context used as given, True for a default one, False/None for plaintext.
TLSOption = Union[ssl.SSLContext, bool, None]

#: A file path (``str`` or ``pathlib.Path``).
PathLike = Union[str, "os.PathLike[str]"]

# OpenSSL's reasons for a first answer that is not a TLS record at all: the port speaks something else.
_NOT_TLS_REASONS = frozenset({
    "WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST",
    "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE", "UNEXPECTED_RECORD", "WRONG_SSL_VERSION",
    "UNSUPPORTED_PROTOCOL",
})

# Alerts a server sends when it does not accept the client certificate it got.
_CLIENT_CERT_ALERTS = frozenset({
    "SSLV3_ALERT_BAD_CERTIFICATE", "TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE", "SSLV3_ALERT_CERTIFICATE_EXPIRED", "SSLV3_ALERT_CERTIFICATE_REVOKED",
    "TLSV1_ALERT_ACCESS_DENIED", "TLSV1_ALERT_DECRYPT_ERROR",
})

# X509_V_ERR_* codes meaning the chain does not lead to a trusted root.
_UNTRUSTED_CODES = frozenset({2, 18, 19, 20, 21})
_HOSTNAME_MISMATCH_CODES = frozenset({62, 64})  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


def make_context(
    tls: TLSOption,
    *,
    ca: Optional[PathLike] = None,
    cert: Optional[PathLike] = None,
    key: Optional[PathLike] = None,
    server_hostname: Optional[str] = None,
) -> Optional[ssl.SSLContext]:
    """The context a client connects with, or None for plaintext.

    ``tls=True`` (or ``tls=None`` with any of the file arguments) builds a default
    context: verification of the server's certificate and host name, TLS 1.2 or later,
    trusting ``ca`` alone when given (else the system's roots), presenting ``cert``
    (with ``key``, or a key inside ``cert``) as the client certificate. An
    ``ssl.SSLContext`` is used as given. Either way ALPN offers ``inferwire/1``.
    """
    files = ca is not None or cert is not None or key is not None
    if tls is None:
        tls = files
    if tls is False:
        if files:
            raise ValueError("tls_ca, tls_cert and tls_key configure TLS; they cannot be used with tls=False")
        if server_hostname is not None:
            raise ValueError("server_hostname is for TLS connections; pass tls=True (or tls_ca=...) as well")
        return None
    if isinstance(tls, ssl.SSLContext):
        if files:
            raise ValueError("pass either an ssl.SSLContext as tls= or tls_ca/tls_cert/tls_key, not both")
        context = tls
    elif tls is True:
        if key is not None and cert is None:
            raise ValueError("tls_key needs tls_cert (the client certificate it belongs to)")
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert is not None:
            context.load_cert_chain(cert, key)
    else:
        raise TypeError(f"tls must be an ssl.SSLContext, True, False or None, not {type(tls).__name__}")
    context.set_alpn_protocols([ALPN])
    return context


def address(host: str, port: int) -> str:
    """``host:port`` as people write it (``[::1]:8500`` for IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_alpn(selected: Optional[str], where: str) -> None:
    """A server that selected some other application protocol is not an InferWire server."""
    if selected is not None and selected != ALPN:
        raise TLSHandshakeError(
            f"the server at {where} selected the application protocol {selected!r} in the TLS handshake, not {ALPN!r}"
        )


def handshake_error(exc: BaseException, where: str, *, timeout: Optional[float] = None) -> InferWireError:
    """What a failure during the TLS handshake (or the server's verdict right after it) is raised as."""
    prefix = f"TLS handshake with {where} failed"
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = f"{prefix}: certificate verify failed: {str(exc.verify_message).rstrip('.')}"
        if exc.verify_code in _UNTRUSTED_CODES:
            message += " (the server's certificate does not chain to a CA this client trusts; pass tls_ca=)"
        elif exc.verify_code in _HOSTNAME_MISMATCH_CODES:
            message += " (the certificate names other hosts; connect to one of them, or pass server_hostname=)"
        return TLSHandshakeError(message)
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, BrokenPipeError)):
        return TLSHandshakeError(f"{prefix}: the server closed the connection ({exc})")
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or ""
        said = reason.lower().replace("_", " ") if reason else str(exc)
        if reason in _NOT_TLS_REASONS:
            return TLSHandshakeError(
                f"the server at {where} does not speak TLS on this port: its answer to the TLS handshake "
                f"is not TLS ({said}); connect without tls"
            )
        if reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED":
            return TLSHandshakeError(
                f"{prefix}: the server requires a client certificate (pass tls_cert= and tls_key=) ({said})"
            )
        if reason in _CLIENT_CERT_ALERTS:
            return TLSHandshakeError(f"{prefix}: the server did not accept the client certificate ({said})")
        if reason == "TLSV1_ALERT_NO_APPLICATION_PROTOCOL":
            return TLSHandshakeError(f"{prefix}: the server does not offer the application protocol {ALPN} ({said})")
        return TLSHandshakeError(f"{prefix}: {said}")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        within = f" within {timeout:g} s" if timeout is not None else ""
        return TLSHandshakeError(f"{prefix}: no answer{within}")
    return TLSHandshakeError(f"{prefix}: {exc}")
