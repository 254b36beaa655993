"""A canary Secret value, planted wherever a value can sit, never appears in a test result.

The canary is the Secret's password (or another of its values) and is planted as well in the
Secret's other keys, inside PEM and JSON keys, and in spec fields (database, displayName,
warehouse, project, endpoint path, Secret name...). The result — message, every check's
message, server version, fingerprint — must hold neither the canary nor its URL-encoded form.

The second half makes a server say it: ``EchoingPostgresServer`` asks psycopg for the password
in clear text and repeats it, with the whole connection string, in its error messages or in
the server version it reports.
Canaries here are 12–40 characters of letters, digits and ``-_.~`` (non-ASCII letters too):
values that a server repeats verbatim. Passwords with quotes, backslashes or spaces, which
servers and libraries repeat in escaped forms, are in test_found_bugs.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from tests.reliability import strategies as S
from tests.reliability.fakes import DENY_ALL, fuzz
from tests.support.faulty_servers import EchoingPostgresServer
from warehouse_operator.models import ProbeResult, Reason
from warehouse_operator.probe import EgressPolicy, run_test

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~éßøЖ"
canaries = st.text(alphabet=ALPHABET, min_size=12, max_size=40).map(lambda s: "Cn" + s)


def leaks(result: ProbeResult, canary: str) -> list[str]:
    """Where the canary (or its URL-encoded form) shows in the result, if anywhere."""
    text = json.dumps(result.model_dump(mode="json"), ensure_ascii=False)
    return [form for form in {canary, quote(canary, safe="")} if form in text]


def pem_with_line(line: str) -> bytes:
    return f"-----BEGIN CERTIFICATE-----\nMIIB{line}\n{line}\n-----END CERTIFICATE-----\n".encode()


SPEC_PLACES = {
    "postgres": ["database", "displayName", "secretName", "keyName"],
    "snowflake": ["warehouse", "role", "database", "schema", "displayName", "endpointPath"],
    "bigquery": ["projectId", "datasetId", "location", "displayName", "endpointPath"],
}
SECRET_PLACES = {
    "postgres": ["password", "username", "other", "ca.crt"],
    "snowflake": ["password", "username", "other", "private_key", "private_key_passphrase"],
    "bigquery": ["private_key_id", "client_email", "project_id", "private_key", "other"],
}


@st.composite
def planted(draw: st.DrawFn, canary: str) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """A spec and a Secret with the canary in some of the places above."""
    provider = draw(st.sampled_from(["postgres", "postgresql", "snowflake", "bigquery"]))
    block = "postgres" if provider == "postgresql" else provider
    in_secret = draw(st.lists(st.sampled_from(SECRET_PLACES[block]), min_size=1, unique=True))
    in_spec = draw(st.lists(st.sampled_from(SPEC_PLACES[block]), unique=True))
    spec: dict[str, Any] = {
        "provider": provider,
        "credentialsSecretRef": {"name": "db"},
        "testTimeout": "2s",
    }
    values: dict[str, bytes] = {}
    canary_bytes = canary.encode()
    if block == "postgres":
        spec["postgres"] = {"host": "127.0.0.1", "port": 9, "database": "app"}
        values = {"username": b"app", "password": b"pw-0123456789"}
    elif block == "snowflake":
        method = draw(st.sampled_from(["password", "keyPair"]))
        spec["snowflake"] = {
            "account": "acme",
            "authMethod": method,
            "endpoint": "http://127.0.0.1:9",
        }
        values = {"username": b"probe"}
        values |= (
            {"password": b"pw-0123456789"} if method == "password" else {"private_key": S.rsa_pem()}
        )
    else:
        spec["bigquery"] = {"projectId": "p", "endpoint": "http://127.0.0.1:9"}
    key_info: dict[str, str] = {}
    for place in in_secret:
        if place in ("password", "username", "private_key_passphrase"):
            values[place] = canary_bytes
        elif place == "other":
            values[draw(st.sampled_from(["token", "x", "DB_PASSWORD", "ca.key"]))] = canary_bytes
        elif place in ("ca.crt", "private_key") and block != "bigquery":
            values[place] = pem_with_line(canary)
        elif place == "private_key":
            key_info["private_key"] = pem_with_line(canary).decode()
        elif place == "client_email":
            key_info["client_email"] = canary + "@p.iam.gserviceaccount.com"
        else:
            key_info[place] = canary
    if block == "bigquery":
        info = json.loads(S.service_account_json("http://127.0.0.1:9/token", S.rsa_pem().decode()))
        values["service_account.json"] = json.dumps(info | key_info).encode()
    for place in in_spec:
        if place == "displayName":
            spec["displayName"] = canary
        elif place == "secretName":
            spec["credentialsSecretRef"]["name"] = canary
        elif place == "keyName":
            spec["credentialsSecretRef"]["keys"] = {"password": canary}
            values[canary] = values.pop("password", b"pw-0123456789")
        elif place == "endpointPath":
            spec[block]["endpoint"] = f"http://127.0.0.1:9/{canary}"
        else:
            spec[block][place] = canary
    # sometimes something else is missing, so that a failure message names keys and the Secret
    others = sorted(k for k, v in values.items() if canary_bytes not in v)
    drop_one: bool = draw(st.booleans())
    if others and drop_one:
        victim: str = draw(st.sampled_from(others))
        values[victim] = b""
    secret = {k: S.b64(v) for k, v in values.items()}
    return spec, secret, [*in_secret, *in_spec]


@fuzz(400)
@given(data=st.data())
def test_canary_never_in_the_result(data: Any) -> None:
    canary = data.draw(canaries)
    spec, secret, places = data.draw(planted(canary))
    result = asyncio.run(run_test(spec, secret, policy=DENY_ALL))
    event(f"reason={result.reason.value}")
    assert not leaks(result, canary), (places, result)


# --- a server that repeats the password ---------------------------------------------------------


@pytest.fixture(scope="module")
def echo_server() -> Iterator[EchoingPostgresServer]:
    with EchoingPostgresServer("auth-error") as server:
        yield server


# (mode, what the server says when it refuses the login) -- each message takes another path
# through the provider's error classification, most of which keep the server's own words
MODES = [
    ("auth-error", 'login rejected for user "{user}": {echo}'),
    ("auth-error", 'password authentication failed for user "{user}" {echo}'),
    ("auth-error", 'database "{database}" does not exist ({echo})'),
    ("auth-error", 'role "{user}" is not permitted to log in: {echo}'),
    ("auth-error", 'permission denied for database "{database}": {echo}'),
    ("auth-error", 'no pg_hba.conf entry for host "127.0.0.1", user "{user}": {echo}'),
    ("auth-error", "SSL error: certificate verify failed {echo}"),
    ("auth-error", "the database system is starting up {echo}"),
    ("version", ""),  # server_version starts with the password
    ("query-error", ""),  # SELECT 1 fails with the password in its message and detail
]


@fuzz(300)
@given(
    canary=canaries,
    mode=st.sampled_from(MODES),
    canary_user=st.booleans(),
    canary_database=st.booleans(),
)
def test_canary_repeated_by_the_server_never_in_the_result(
    echo_server: EchoingPostgresServer,
    canary: str,
    mode: tuple[str, str],
    canary_user: bool,
    canary_database: bool,
) -> None:
    echo_server.mode = "auth-error" if mode[0] == "auth-error" else "version"
    if mode[0] == "query-error":
        echo_server.mode = "query-error"
    echo_server.error_template = mode[1]
    spec = {
        "provider": "postgres",
        "credentialsSecretRef": {"name": "db"},
        "postgres": {
            "host": echo_server.host,
            "port": echo_server.port,
            "database": canary if canary_database else "appdb",
            "sslMode": "prefer",
        },
        "testTimeout": "5s",
    }
    user = "u-" + canary[::-1] if canary_user else "app"
    secret = {"username": S.b64(user.encode()), "password": S.b64(canary.encode())}
    received = len(echo_server.received_passwords)
    result = asyncio.run(run_test(spec, secret, policy=EgressPolicy()))
    event(f"{mode[0]}: {mode[1][:24]} -> {result.reason.value}")
    # the server did get the password, so what it said held it
    assert echo_server.received_passwords[received:] == [canary]
    assert not leaks(result, canary), result
    assert not leaks(result, user) or not canary_user, result
    if mode[0] == "version":
        assert result.reason is Reason.CONNECTED, result
        assert result.server_version == "PostgreSQL [REDACTED]"
    else:
        assert result.reason is not Reason.CONNECTED, result
    if not mode[1].startswith(("password authentication failed", "database ")):
        # the server's own words reached the result: redaction, not luck, kept the canary out
        assert "[REDACTED]" in json.dumps(result.model_dump(mode="json")), result
