"""Hypothesis strategies: specs and Secrets far outside the schema, and nearly right ones.

Every value a test can be handed here is JSON-shaped (what the Kubernetes API serves). Host
names and URLs are drawn so that no test can send a packet or a DNS question anywhere: a
host is either an IP literal, ``localhost`` (answered from /etc/hosts), or a string the spec
validation rejects; endpoints are IP-literal URLs or invalid. Snowflake and BigQuery blocks
always carry an endpoint, because without one the test would resolve the provider's public
name.
"""

from __future__ import annotations

import base64
import json
from functools import cache
from typing import Any

from hypothesis import strategies as st

from tests.support.encoding import b64

PROVIDER_NAMES = ["postgres", "postgresql", "snowflake", "bigquery"]
BAD_PROVIDER_NAMES = ["", "Postgres", "POSTGRESQL", "mysql", "oracle", "redshift", " postgres"]

SAFE_IPS = [
    "127.0.0.1",
    "10.1.2.3",
    "192.0.2.7",
    "169.254.169.254",
    "0.0.0.0",
    "255.255.255.255",
    "::1",
    "[::1]",
    "fe80::1",
    "2001:db8::5",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
]
SAFE_HOSTS = [*SAFE_IPS, "localhost"]
SAFE_URLS = [
    "http://127.0.0.1:9",
    "https://10.1.2.3",
    "https://[2001:db8::5]:8443/api",
    "http://169.254.169.254/computeMetadata/v1/",
    "http://localhost:1",
    "https://192.0.2.7:443/",
]

SSL_MODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
DURATIONS = ["30s", "5m", "1h", "250ms", "1h30m", "0.5s", "168h", "0s"]
BAD_DURATIONS = ["", "0", "10", "s", "5 m", "-1s", "1d", "169h", "10x", "1e3s", "1s" * 20, "٣s"]

SECRET_KEYS = [
    "username",
    "user",
    "password",
    "ca.crt",
    "private_key",
    "private_key_passphrase",
    "service_account.json",
]

# every field name the spec knows: random extra keys never take one of these names, so that no
# unplanned valid host (and so no DNS question) can appear
FIELD_NAMES = frozenset(
    {
        "provider",
        "displayName",
        "credentialsSecretRef",
        "postgres",
        "snowflake",
        "bigquery",
        "testInterval",
        "testTimeout",
        "suspend",
        "host",
        "port",
        "database",
        "sslMode",
        "account",
        "authMethod",
        "warehouse",
        "role",
        "schema",
        "endpoint",
        "projectId",
        "datasetId",
        "location",
        "name",
        "keys",
    }
)
extra_keys = st.text(max_size=10).filter(lambda k: k not in FIELD_NAMES)

# --- JSON junk ---------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
junk = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3)
    ),
    max_leaves=6,
)
non_null_junk = junk.filter(lambda v: v is not None)


def rarely(
    strategy: st.SearchStrategy[Any], otherwise: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """``strategy`` about one draw in sixteen, else ``otherwise`` (huge values are slow)."""
    return st.integers(0, 15).flatmap(lambda i: strategy if i == 0 else otherwise)


huge_text = st.sampled_from(["x" * 100_001, "é" * 5000, "\u202e" * 300, "\ud7ff" * 40])
any_text = rarely(huge_text, st.text(max_size=60)) | st.sampled_from(["", "a\x00b", " ", "\n"])


def invalid_host() -> st.SearchStrategy[Any]:
    """A host value the spec validation must reject (a string with a character no host has)."""
    return st.builds(lambda s, c: s + c, st.text(max_size=40), st.sampled_from(" /@%\n\t,;")) | (
        non_null_junk.filter(lambda v: not isinstance(v, str))
    )


hosts = st.sampled_from(SAFE_HOSTS) | invalid_host()
urls = (
    st.sampled_from(SAFE_URLS)
    | st.sampled_from(["ftp://127.0.0.1", "http://user:pw@127.0.0.1", "127.0.0.1:80", "http://"])
    | invalid_host()
)
ports = (
    st.integers(min_value=1, max_value=65535)
    | st.sampled_from([0, -1, 65536, 2**63, 5432.0, "5432", True])
    | non_null_junk
)
durations = st.sampled_from(DURATIONS) | st.sampled_from(BAD_DURATIONS) | non_null_junk


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The value, or the key left out (``None`` here means: leave it out)."""
    return st.none() | strategy


@st.composite
def blocks(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, strategy in fields.items():
        value = draw(maybe(strategy))
        if value is not None:
            out[key] = value
    extra = draw(st.dictionaries(extra_keys, junk, max_size=2))
    return {**extra, **out}


postgres_blocks = blocks(
    {
        "host": hosts,
        "port": ports,
        "database": any_text | non_null_junk,
        "sslMode": st.sampled_from(SSL_MODES) | any_text,
    }
)


@st.composite
def snowflake_blocks(draw: st.DrawFn) -> dict[str, Any]:
    block = draw(
        blocks(
            {
                "account": st.sampled_from(["acme", "myorg-account", "xy12345.eu-west-1"])
                | any_text
                | non_null_junk,
                "authMethod": st.sampled_from(["password", "keyPair", "oauth", ""]),
                "warehouse": any_text,
                "database": any_text,
                "role": any_text,
                "schema": any_text,
            }
        )
    )
    block["endpoint"] = draw(urls)  # never absent or null: that would resolve a public name
    return block


@st.composite
def bigquery_blocks(draw: st.DrawFn) -> dict[str, Any]:
    block = draw(
        blocks(
            {
                "projectId": st.sampled_from(["my-project", "p"]) | any_text | non_null_junk,
                "datasetId": st.sampled_from(["ds", "other.ds", "a.b.c"]) | any_text,
                "location": any_text,
            }
        )
    )
    block["endpoint"] = draw(urls)
    return block


secret_refs = (
    st.fixed_dictionaries(
        {"name": st.sampled_from(["db", "creds"]) | any_text | non_null_junk},
        optional={
            "keys": st.dictionaries(
                st.sampled_from(SECRET_KEYS) | st.text(max_size=10),
                st.sampled_from(SECRET_KEYS) | any_text | non_null_junk,
                max_size=4,
            )
            | non_null_junk,
            "namespace": st.text(max_size=20),
        },
    )
    | non_null_junk
)


@st.composite
def raw_specs(draw: st.DrawFn) -> Any:
    """Any spec: junk, or an object whose every field may be missing, wrong or odd."""
    if draw(st.integers(0, 9)) == 0:
        return draw(junk)
    provider = draw(
        st.sampled_from(PROVIDER_NAMES) | st.sampled_from(BAD_PROVIDER_NAMES) | non_null_junk
    )
    spec: dict[str, Any] = {"provider": provider}
    if draw(st.integers(0, 9)) == 0:
        del spec["provider"]
    spec["credentialsSecretRef"] = draw(secret_refs)
    provider_blocks: list[tuple[str, st.SearchStrategy[Any]]] = [
        ("postgres", postgres_blocks),
        ("snowflake", snowflake_blocks()),
        ("bigquery", bigquery_blocks()),
    ]
    for key, strategy in provider_blocks:
        if draw(st.booleans()):
            spec[key] = draw(strategy | non_null_junk)
    for key, strategy in (
        ("displayName", any_text | non_null_junk),
        ("testInterval", durations),
        ("testTimeout", durations),
        ("suspend", st.booleans() | non_null_junk),
    ):
        if draw(st.booleans()):
            spec[key] = draw(strategy)
    spec.update(draw(st.dictionaries(extra_keys, junk, max_size=2)))
    return spec


# --- Secret values -----------------------------------------------------------------------------


@cache
def rsa_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@cache
def encrypted_rsa_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(rsa_pem(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"right-passphrase"),
    )


@cache
def ec_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def malformed_pems() -> st.SearchStrategy[bytes]:
    def wrap(label: str, body: bytes) -> bytes:
        lines = b"\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        return f"-----BEGIN {label}-----\n".encode() + lines + f"\n-----END {label}-----\n".encode()

    labels = st.sampled_from(
        ["PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "CERTIFICATE", "EC PRIVATE KEY"]
    )
    return (
        st.builds(wrap, labels, st.binary(max_size=300).map(base64.b64encode))
        | st.builds(wrap, labels, st.binary(max_size=200))
        | st.builds(lambda n: rsa_pem()[:n], st.integers(1, len(rsa_pem()) - 30))
        | st.builds(
            lambda n: rsa_pem()[:n] + rsa_pem()[n + 8 :], st.integers(30, len(rsa_pem()) - 40)
        )
        | st.just(b"-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n")
        | st.just(b"-----BEGIN CERTIFICATE-----")
    )


def service_account_json(token_uri: Any, private_key: Any, **extra: Any) -> bytes:
    info = {
        "type": "service_account",
        "project_id": "p",
        "private_key_id": "k1",
        "private_key": private_key,
        "client_email": "probe@p.iam.gserviceaccount.com",
        "token_uri": token_uri,
        **extra,
    }
    return json.dumps({k: v for k, v in info.items() if v is not None}).encode()


@st.composite
def service_account_keys(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return json.dumps(draw(junk)).encode()
    if kind == 2:
        return draw(
            st.sampled_from(
                [b"{", b"[]", b"null", b'{"type": "service_account"', b"\xef\xbb\xbf{}"]
            )
        )
    token_uri = draw(
        st.sampled_from([u + "/token" for u in SAFE_URLS]) | invalid_host() | st.none()
    )
    private_key = draw(
        st.sampled_from([rsa_pem().decode(), ec_pem().decode(), encrypted_rsa_pem().decode()])
        | malformed_pems().map(lambda b: b.decode("latin-1"))
        | st.none()
        | non_null_junk
    )
    extra = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "type": st.sampled_from(["authorized_user", "", "SERVICE_ACCOUNT"]) | non_null_junk,
                "client_email": st.sampled_from(["", "no-at-sign", "a b@c"]) | non_null_junk,
                "private_key_id": non_null_junk,
            },
        )
    )
    return service_account_json(token_uri, private_key, **extra)


def value_for(key: str) -> st.SearchStrategy[bytes]:
    """Bytes that might sit under ``key`` in a Secret: right, wrong, or hostile."""
    generic = (
        st.binary(max_size=64)
        | st.text(max_size=64).map(str.encode)
        | st.just(b"")
        | rarely(
            st.just(b"x" * 200_000),
            st.sampled_from([b"\x00" * 10, b"\xff\xfe", b"\n\n\n", "ä".encode()]),
        )
    )
    if key in ("ca.crt", "private_key"):
        return (
            generic | malformed_pems() | st.sampled_from([rsa_pem(), ec_pem(), encrypted_rsa_pem()])
        )
    if key == "service_account.json":
        return generic | service_account_keys()
    if key == "private_key_passphrase":
        return generic | st.just(b"right-passphrase")
    return generic


@st.composite
def secret_values(draw: st.DrawFn, key: str) -> Any:
    """What the Secret's ``data`` holds under ``key``: usually base64, sometimes not."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.sampled_from(["%%%", "abc", "YQ", "YQ==\n", "====", " ", "Y Q = ="]))
    if kind == 1:
        return draw(non_null_junk.filter(lambda v: not isinstance(v, str)))
    return b64(draw(value_for(key)))


@st.composite
def secrets(draw: st.DrawFn) -> dict[str, Any] | None:
    if draw(st.integers(0, 14)) == 0:
        return None
    keys = draw(st.lists(st.sampled_from(SECRET_KEYS) | st.text(max_size=12), max_size=6))
    return {key: draw(secret_values(key)) for key in keys}
