"""Snowflake credentials: key loading, the public-key fingerprint, Secret parsing, connect
parameters. Pure: no network, no connector."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

from warehouse_operator.models import ProbeFailure, Reason, parse_spec
from warehouse_operator.providers.snowflake import PROVIDER, SnowflakeCredentials
from warehouse_operator.providers.snowflake.driver import connect_params
from warehouse_operator.providers.snowflake.keys import load_private_key
from warehouse_operator.providers.snowflake.target import SnowflakeTarget, identifier, target_of
from warehouse_operator.secrets import SecretData

PASSPHRASE = b"correct horse battery staple"
PEM = serialization.Encoding.PEM
PKCS8 = serialization.PrivateFormat.PKCS8
PKCS1 = serialization.PrivateFormat.TraditionalOpenSSL
PLAIN = serialization.NoEncryption()
LOCKED = serialization.BestAvailableEncryption(PASSPHRASE)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def fingerprint_from_public_pem(public_pem: bytes) -> str:
    """Independently of the provider: the DER between the PEM armour lines, hashed."""
    body = b"".join(line for line in public_pem.splitlines() if not line.startswith(b"-----"))
    return "SHA256:" + base64.b64encode(hashlib.sha256(base64.b64decode(body)).digest()).decode()


def public_pem_of(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@pytest.mark.parametrize(
    ("fmt", "encryption", "passphrase"),
    [
        (PKCS8, PLAIN, None),
        (PKCS1, PLAIN, None),
        (PKCS8, LOCKED, PASSPHRASE),
        (PKCS1, LOCKED, PASSPHRASE),
        (PKCS8, PLAIN, PASSPHRASE),  # a passphrase for a plain key is harmless
    ],
    ids=["pkcs8", "pkcs1", "pkcs8-encrypted", "pkcs1-encrypted", "plain-with-passphrase"],
)
def test_private_key_formats_load_to_der_with_the_snowflake_fingerprint(
    rsa_key: rsa.RSAPrivateKey,
    fmt: serialization.PrivateFormat,
    encryption: serialization.KeySerializationEncryption,
    passphrase: bytes | None,
) -> None:
    pem = rsa_key.private_bytes(PEM, fmt, encryption)
    der, fingerprint = load_private_key(pem, passphrase, "sf")

    loaded = serialization.load_der_private_key(der, password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    assert loaded.private_numbers() == rsa_key.private_numbers()
    assert fingerprint == fingerprint_from_public_pem(public_pem_of(rsa_key))


def test_fingerprint_matches_the_connectors_own_computation(rsa_key: rsa.RSAPrivateKey) -> None:
    from snowflake.connector.auth import AuthByKeyPair

    _, fingerprint = load_private_key(rsa_key.private_bytes(PEM, PKCS8, PLAIN), None, "sf")
    assert fingerprint == AuthByKeyPair.calculate_public_key_fingerprint(rsa_key)  # type: ignore[no-untyped-call]


def test_pem_with_windows_line_endings_and_surrounding_space(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = b"\n  " + rsa_key.private_bytes(PEM, PKCS8, PLAIN).replace(b"\n", b"\r\n") + b"\n\n"
    _, fingerprint = load_private_key(pem, None, "sf")
    assert fingerprint == fingerprint_from_public_pem(public_pem_of(rsa_key))


def test_ec_keys_are_accepted() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    _, fingerprint = load_private_key(key.private_bytes(PEM, PKCS8, PLAIN), None, "sf")
    assert fingerprint == fingerprint_from_public_pem(public_pem_of(key))


@pytest.mark.parametrize(
    "make",
    [
        ed25519.Ed25519PrivateKey.generate,
        lambda: dsa.generate_private_key(1024),  # noqa: S505 (rejected anyway; small is fast)
    ],
)
def test_key_types_snowflake_cannot_use_are_invalid(make: Any) -> None:
    pem = make().private_bytes(PEM, PKCS8, PLAIN)
    with pytest.raises(ProbeFailure) as caught:
        load_private_key(pem, None, "sf")
    assert caught.value.reason is Reason.INVALID_CREDENTIALS
    assert "needs an RSA key" in caught.value.message


@pytest.mark.parametrize(
    ("pem", "passphrase", "expected"),
    [
        (b"hello", None, "is not a PEM private key"),
        (
            b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            None,
            "is not a PEM private key",
        ),
        (
            b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
            None,
            "is not a valid PEM private key",
        ),
        ("locked", None, "is encrypted, but the Secret has no 'private_key_passphrase'"),
        ("locked", b"wrong", "could not be decrypted with 'private_key_passphrase'"),
        ("locked-pkcs1", b"wrong", "could not be decrypted with 'private_key_passphrase'"),
        ("truncated", None, "is not a valid PEM private key"),
    ],
)
def test_unusable_keys_are_invalid_credentials_without_echoing_the_key(
    rsa_key: rsa.RSAPrivateKey, pem: Any, passphrase: bytes | None, expected: str
) -> None:
    if pem == "locked":
        pem = rsa_key.private_bytes(PEM, PKCS8, LOCKED)
    elif pem == "locked-pkcs1":
        pem = rsa_key.private_bytes(PEM, PKCS1, LOCKED)
    elif pem == "truncated":
        full = rsa_key.private_bytes(PEM, PKCS8, PLAIN).splitlines()
        pem = b"\n".join(full[:5] + full[-1:])
    with pytest.raises(ProbeFailure) as caught:
        load_private_key(pem, passphrase, "sf-key")
    assert caught.value.reason is Reason.INVALID_CREDENTIALS
    assert expected in caught.value.message
    assert "Secret 'sf-key'" in caught.value.message
    for line in pem.splitlines():
        if len(line) > 8 and not line.startswith(b"-----"):
            assert line.decode() not in caught.value.message


# --- Secret -> credentials -----------------------------------------------------------------


def spec(**snowflake: Any) -> Any:
    return parse_spec(
        {
            "provider": "snowflake",
            "credentialsSecretRef": {"name": "sf"},
            "snowflake": {"account": "myorg-myaccount", **snowflake},
        }
    )


def test_password_credentials_accept_user_as_an_alias_and_hide_the_password() -> None:
    creds = PROVIDER.parse_credentials(
        spec(), SecretData.from_plain("sf", {"user": "loader", "password": "s3cret-pw-value"})
    )
    assert (creds.username, creds.password, creds.auth_method) == (
        "loader",
        "s3cret-pw-value",
        "password",
    )
    assert creds.public_key_fingerprint is None
    assert "s3cret-pw-value" not in repr(creds)
    assert "s3cret-pw-value" not in str(creds)


def test_key_pair_credentials_carry_der_and_fingerprint_and_hide_the_key(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    pem = rsa_key.private_bytes(PEM, PKCS8, LOCKED).decode()
    creds = PROVIDER.parse_credentials(
        spec(authMethod="keyPair"),
        SecretData.from_plain(
            "sf",
            {"username": "etl", "private_key": pem, "private_key_passphrase": PASSPHRASE},
        ),
    )
    assert creds.auth_method == "keyPair"
    assert creds.password is None
    assert creds.public_key_fingerprint == fingerprint_from_public_pem(public_pem_of(rsa_key))
    shown = repr(creds)
    assert creds.public_key_fingerprint in shown
    assert "private_key=***" in shown
    assert PASSPHRASE.decode() not in shown
    assert all(line not in shown for line in pem.splitlines()[1:-1])


@pytest.mark.parametrize(
    ("auth", "values", "missing"),
    [
        ("password", {"username": "u"}, "'password'"),
        ("password", {"password": "p"}, "'username' or 'user'"),
        ("keyPair", {"username": "u", "password": "p"}, "'private_key'"),
    ],
)
def test_missing_secret_keys(auth: str, values: dict[str, str], missing: str) -> None:
    with pytest.raises(ProbeFailure) as caught:
        PROVIDER.parse_credentials(spec(authMethod=auth), SecretData.from_plain("sf", values))
    assert caught.value.reason is Reason.SECRET_KEY_MISSING
    assert missing in caught.value.message


def test_mapped_secret_keys_are_used(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = rsa_key.private_bytes(PEM, PKCS1, PLAIN).decode()
    creds = PROVIDER.parse_credentials(
        spec(authMethod="keyPair"),
        SecretData.from_plain(
            "sf",
            {"login": "svc", "rsa_key.p8": pem},
            {"username": "login", "private_key": "rsa_key.p8"},
        ),
    )
    assert creds.username == "svc"
    assert creds.private_key_der is not None


# --- where and how to connect -----------------------------------------------------------------


def test_default_target_is_the_account_host_over_https() -> None:
    sf = spec(account="MyOrg-MyAccount").snowflake
    assert target_of(sf) == SnowflakeTarget("myorg-myaccount.snowflakecomputing.com", 443, "https")
    dests = PROVIDER.destinations(spec(account="MyOrg-MyAccount"), SnowflakeCredentials("u", "p"))
    assert [(d.host, d.port) for d in dests] == [("myorg-myaccount.snowflakecomputing.com", 443)]


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("http://127.0.0.1:8085", SnowflakeTarget("127.0.0.1", 8085, "http")),
        (
            "https://sf.privatelink.example.com",
            SnowflakeTarget("sf.privatelink.example.com", 443, "https"),
        ),
        ("http://proxy.internal/", SnowflakeTarget("proxy.internal", 80, "http")),
    ],
)
def test_endpoint_replaces_the_account_host(endpoint: str, expected: SnowflakeTarget) -> None:
    full = spec(endpoint=endpoint)
    assert full.snowflake is not None
    assert target_of(full.snowflake) == expected
    dests = PROVIDER.destinations(full, SnowflakeCredentials("u", "p"))
    assert [(d.host, d.port) for d in dests] == [(expected.host, expected.port)]


def test_connect_params_validate_defaults_and_take_timeouts_from_the_budget() -> None:
    full = spec(warehouse="WH", database="DB", role="R", endpoint="http://127.0.0.1:1")
    assert full.snowflake is not None
    target = target_of(full.snowflake)
    params = connect_params(full.snowflake, SnowflakeCredentials("u", "pw"), target, 7.2)
    assert params["validate_default_parameters"] is True
    assert (params["login_timeout"], params["network_timeout"], params["socket_timeout"]) == (
        8,
        8,
        8,
    )
    assert (params["host"], params["port"], params["protocol"]) == ("127.0.0.1", 1, "http")
    assert (params["warehouse"], params["database"], params["schema"], params["role"]) == (
        "WH",
        "DB",
        "PUBLIC",
        "R",
    )
    assert params["password"] == "pw"
    assert "authenticator" not in params
    assert params["client_session_keep_alive"] is False


def test_connect_params_key_pair_and_no_defaults() -> None:
    full = spec()
    assert full.snowflake is not None
    creds = SnowflakeCredentials("u", private_key_der=b"der", public_key_fingerprint="SHA256:x")
    params = connect_params(full.snowflake, creds, target_of(full.snowflake), 0.2)
    assert params["authenticator"] == "SNOWFLAKE_JWT"
    assert "password" not in params
    assert "private_key" not in params  # handed to the connector's key-pair authenticator
    assert params["login_timeout"] == 1
    for absent in ("warehouse", "database", "schema", "role"):
        assert absent not in params


@pytest.mark.parametrize(
    ("name", "stored"),
    [("compute_wh", "COMPUTE_WH"), ('"Mixed Case"', "Mixed Case"), ('"a""b"', 'a"b')],
)
def test_identifier(name: str, stored: str) -> None:
    assert identifier(name) == stored


def test_importing_the_provider_does_not_import_the_connector() -> None:
    code = (
        "import sys\n"
        "import warehouse_operator.probe\n"
        "from warehouse_operator.providers import snowflake\n"
        "assert 'snowflake.connector' not in sys.modules, 'connector imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
