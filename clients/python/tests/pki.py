"""Certificates for the TLS tests, made with the ``openssl`` command at test time.

One CA signs the server's certificate (for ``127.0.0.1`` and ``localhost``), an expired
one, one naming only ``other.example``, and client certificates; a second CA, which
servers and clients trust only when a test says so, signs a client certificate. Leaf certificates are issued with
``openssl ca``, which (unlike OpenSSL 3.0's ``x509 -req``) takes explicit validity
dates, so the expired certificate really lies in the past.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

SERVER_NAMES = "subjectAltName=IP:127.0.0.1,DNS:localhost"

_CA_CONFIG = """\
[ca]
default_ca = issuer
[issuer]
database = {db}/index.txt
new_certs_dir = {db}
rand_serial = yes
default_md = sha256
policy = any_name
unique_subject = no
[any_name]
commonName = supplied
"""


def openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stdout}{result.stderr}")


@dataclass(frozen=True)
class Pair:
    """A certificate and its key (PEM files)."""

    cert: Path
    key: Path


class CA:
    """A self-signed CA that issues P-256 certificates with ``openssl ca``."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.db = directory / f"{name}-db"
        self.db.mkdir()
        (self.db / "index.txt").write_text("")
        self.config = directory / f"{name}.cnf"
        self.config.write_text(_CA_CONFIG.format(db=self.db))
        self.cert = directory / f"{name}.pem"
        self.key = directory / f"{name}.key"
        openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(self.key), "-out", str(self.cert), "-subj", f"/CN=InferWire test {name}", "-days", "30",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=directory,
        )

    def issue(
        self, name: str, common_name: str, extensions: str, *, start: Optional[str] = None, end: Optional[str] = None
    ) -> Pair:
        """A certificate for ``common_name``; ``start``/``end`` (``YYYYMMDDHHMMSSZ``) default to now .. 30 days."""
        key = self.directory / f"{name}.key"
        request = self.directory / f"{name}.csr"
        cert = self.directory / f"{name}.pem"
        openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(request), "-subj", f"/CN={common_name}",
            cwd=self.directory,
        )
        extfile = self.directory / f"{name}.ext"
        extfile.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid\n" + extensions.replace(";", "\n") + "\n"
        )
        validity = ["-startdate", start, "-enddate", end] if start and end else ["-days", "30"]
        openssl(
            "ca", "-batch", "-config", str(self.config), "-cert", str(self.cert), "-keyfile", str(self.key),
            "-in", str(request), "-out", str(cert), "-extfile", str(extfile), "-notext", *validity,
            cwd=self.directory,
        )
        return Pair(cert, key)


@dataclass(frozen=True)
class PKI:
    ca: Path  # the CA clients are told to trust
    other_ca: Path  # a CA nobody trusts
    server: Pair  # for 127.0.0.1 and localhost, from ``ca``
    expired: Pair  # like ``server``, valid only in January 2020
    wrong_host: Pair  # from ``ca``, for other.example only
    clients: Dict[str, Pair]  # client certificates from ``ca``, by common name
    untrusted_client: Pair  # CN ci-runner, from ``other_ca``


def make_pki(directory: Path) -> PKI:
    ca = CA(directory, "ca")
    other = CA(directory, "other-ca")
    server_ext = f"extendedKeyUsage=serverAuth;{SERVER_NAMES}"
    client_ext = "extendedKeyUsage=clientAuth"
    return PKI(
        ca=ca.cert,
        other_ca=other.cert,
        server=ca.issue("server", "localhost", server_ext),
        expired=ca.issue("expired", "localhost", server_ext, start="20200101000000Z", end="20200102000000Z"),
        wrong_host=ca.issue("wrong-host", "other.example", "extendedKeyUsage=serverAuth;subjectAltName=DNS:other.example"),
        clients={cn: ca.issue(f"client-{cn}", cn, client_ext) for cn in ("ci-runner", "stranger")},
        untrusted_client=other.issue("untrusted-client", "ci-runner", client_ext),
    )
