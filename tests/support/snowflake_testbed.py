"""The account, users and keys the Snowflake integration tests run against (test data)."""

from __future__ import annotations

import hashlib
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.encoding import b64
from tests.support.snowflake_front import Account, Role, User, Warehouse

ACCOUNT = "testorg-analytics"
PASSWORD_USER = "ALICE"
KEY_USER = "ETL_SERVICE"
# canaries: planted in Secrets, must never show up in a result or a log line
PASSWORD = "pw-Canary-7f3a9c!Secret"
PASSPHRASE = "pp-Canary-c0ffee-Passphrase"
# what a connection test may send: metadata only, nothing that needs (or resumes) a warehouse
METADATA_ONLY = re.compile(r"^(SHOW WAREHOUSES LIKE '[^']*'|SELECT CURRENT_VERSION\(\))$")


@dataclass(frozen=True)
class KeyMaterial:
    """One RSA key in the encodings a Secret may hold, plus its public key as PEM."""

    key: rsa.RSAPrivateKey
    pkcs8: str
    pkcs1: str
    pkcs8_encrypted: str
    pkcs1_encrypted: str
    public_pem: str


def make_key(passphrase: str) -> KeyMaterial:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    pkcs1 = serialization.PrivateFormat.TraditionalOpenSSL
    plain = serialization.NoEncryption()
    locked = serialization.BestAvailableEncryption(passphrase.encode())
    return KeyMaterial(
        key=key,
        pkcs8=key.private_bytes(pem, pkcs8, plain).decode(),
        pkcs1=key.private_bytes(pem, pkcs1, plain).decode(),
        pkcs8_encrypted=key.private_bytes(pem, pkcs8, locked).decode(),
        pkcs1_encrypted=key.private_bytes(pem, pkcs1, locked).decode(),
        public_pem=key.public_key()
        .public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
    )


def make_account(registered: KeyMaterial) -> Account:
    return Account(
        name=ACCOUNT,
        users={
            PASSWORD_USER: User(
                PASSWORD_USER,
                password=PASSWORD,
                default_role="ANALYST",
                roles={"ANALYST", "PUBLIC"},
            ),
            KEY_USER: User(
                KEY_USER,
                public_keys=[registered.key.public_key()],
                default_role="LOADER",
                roles={"LOADER", "PUBLIC"},
            ),
        },
        roles={
            "ANALYST": Role("ANALYST", databases={"ANALYTICS"}, warehouses={"REPORTING_WH"}),
            "LOADER": Role(
                "LOADER", databases={"ANALYTICS", "RAW"}, warehouses={"LOAD_WH", "REPORTING_WH"}
            ),
            "SYSADMIN": Role(
                "SYSADMIN", databases={"ANALYTICS", "RAW", "FINANCE"}, warehouses={"ADMIN_WH"}
            ),
            "PUBLIC": Role("PUBLIC"),
        },
        databases={
            "ANALYTICS": {"PUBLIC", "MARTS"},
            "RAW": {"PUBLIC"},
            "FINANCE": {"PUBLIC"},  # exists, but ANALYST may not use it
        },
        warehouses={
            "REPORTING_WH": Warehouse("REPORTING_WH", state="SUSPENDED"),
            "LOAD_WH": Warehouse("LOAD_WH", state="STARTED", size="Small"),
            "ADMIN_WH": Warehouse("ADMIN_WH", state="SUSPENDED"),
        },
    )


def openssl_fingerprint(public_pem: str, workdir: Path) -> str:
    """Snowflake's documented recipe for ``RSA_PUBLIC_KEY_FP``, run with the openssl CLI."""
    pub = workdir / "rsa_key.pub"
    pub.write_text(public_pem)
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", str(pub), "-outform", "DER"],
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    digest = hashlib.sha256(der).digest()
    encoded = subprocess.run(
        ["openssl", "base64", "-A"], input=digest, check=True, capture_output=True, timeout=30
    ).stdout
    fingerprint = "SHA256:" + encoded.decode().strip()
    # openssl's base64 and Python's must agree, or the recipe above is not what it claims
    assert fingerprint == "SHA256:" + b64(digest)
    return fingerprint
