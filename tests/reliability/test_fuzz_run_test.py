"""``run_test`` fed specs and Secrets far outside the schema: it never raises, always answers
with a reason of the API's table, the right one for what is wrong, and sends nothing anywhere.

Every test here runs under an egress policy that denies every address, and draws host names
only from IP literals, ``localhost`` and strings the validation rejects (see strategies.py),
so no example can send a packet or a DNS question. The network audit proves it per example.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from tests.reliability import strategies as S
from tests.reliability.fakes import DENY_ALL, NetworkAudit, NetworkCall, fuzz
from warehouse_operator.models import CheckResult, InvalidSpecError, ProbeResult, Reason, parse_spec
from warehouse_operator.probe import MAX_MESSAGE, run_test
from warehouse_operator.providers import REGISTRY

# Under a deny-everything policy nothing past the egress check can happen.
BEFORE_NETWORK = {
    Reason.INVALID_SPEC,
    Reason.SECRET_NOT_FOUND,
    Reason.SECRET_KEY_MISSING,
    Reason.INVALID_CREDENTIALS,
    Reason.DESTINATION_DENIED,
}


def run(spec: Any, secret: Any, audit: NetworkAudit) -> tuple[ProbeResult, list[NetworkCall]]:
    with audit.recording() as calls:
        result = asyncio.run(run_test(spec, secret, policy=DENY_ALL))
    return result, calls


def spec_error(spec: Any) -> bool:
    """True when the spec cannot be used (what InvalidSpec must be reported for)."""
    try:
        parsed = parse_spec(spec)
    except InvalidSpecError:
        return True
    return parsed.provider not in REGISTRY


def assert_well_formed(result: ProbeResult, calls: list[NetworkCall]) -> None:
    assert isinstance(result.reason, Reason)
    assert result.reason in BEFORE_NETWORK, result
    assert result.message
    assert len(result.message) <= MAX_MESSAGE
    assert "\n" not in result.message
    names = [c.name for c in result.checks]
    assert names == ["spec", "credentials", "destination"][: len(names)], names
    # the failed stage is the last one shown (SecretNotFound shows none: test_found_bugs.py)
    if result.reason is not Reason.SECRET_NOT_FOUND:
        assert [c.result for c in result.checks][-1] is CheckResult.FAILED
    assert all(c.result is CheckResult.PASSED for c in result.checks[:-1])
    json.loads(result.model_dump_json())  # what goes into status must serialise
    # the only name ever looked up is localhost (from /etc/hosts); nothing connects
    assert all(c.event == "socket.getaddrinfo" and "'localhost'" in c.target for c in calls), calls
    if result.reason is not Reason.DESTINATION_DENIED:
        assert calls == [], calls


@fuzz(1000)
@given(spec=S.raw_specs(), secret=S.secrets())
def test_any_spec_and_secret(network_audit: NetworkAudit, spec: Any, secret: Any) -> None:
    result, calls = run(spec, secret, network_audit)
    event(f"reason={result.reason.value}")
    assert_well_formed(result, calls)
    invalid = spec_error(spec)
    assert (result.reason is Reason.INVALID_SPEC) == invalid, (result, spec)
    if invalid:
        assert [(c.name, c.result) for c in result.checks] == [("spec", CheckResult.FAILED)]
    elif secret is None:
        assert result.reason is Reason.SECRET_NOT_FOUND


# --- nearly right: one thing wrong at a time ----------------------------------------------------


@st.composite
def valid_specs(draw: st.DrawFn, provider: str | None = None) -> dict[str, Any]:
    provider = provider or draw(st.sampled_from(S.PROVIDER_NAMES))
    spec: dict[str, Any] = {
        "provider": provider,
        "credentialsSecretRef": {"name": draw(st.sampled_from(["db", "pg-app", "a.b-c"]))},
        "testTimeout": draw(st.sampled_from(["1s", "10s", "250ms", "1h"])),
    }
    if draw(st.booleans()):
        spec["testInterval"] = draw(st.sampled_from(S.DURATIONS))
    if draw(st.booleans()):
        spec["displayName"] = draw(st.text(min_size=1, max_size=100))
    ip = st.sampled_from([h for h in S.SAFE_HOSTS])
    if provider in ("postgres", "postgresql"):
        spec["postgres"] = {
            "host": draw(ip),
            "port": draw(st.integers(1, 65535)),
            "database": draw(st.text(min_size=1, max_size=60)),
            "sslMode": draw(st.sampled_from(S.SSL_MODES)),
        }
    elif provider == "snowflake":
        spec["snowflake"] = {
            "account": draw(st.sampled_from(["acme", "myorg-account", "xy12345.eu-west-1"])),
            "authMethod": draw(st.sampled_from(["password", "keyPair"])),
            "endpoint": draw(st.sampled_from(S.SAFE_URLS)),
            "warehouse": draw(st.text(min_size=1, max_size=30)),
        }
    else:
        spec["bigquery"] = {
            "projectId": draw(st.sampled_from(["my-project", "p-1"])),
            "endpoint": draw(st.sampled_from(S.SAFE_URLS)),
        }
        if draw(st.booleans()):
            spec["bigquery"]["datasetId"] = draw(st.sampled_from(["ds", "p-1.ds"]))
    return spec


def needed_keys(spec: dict[str, Any]) -> dict[str, bytes]:
    """Good values for every key the spec's provider needs."""
    provider = spec["provider"]
    if provider in ("postgres", "postgresql"):
        return {"username": b"app", "password": b"pw-0123456789"}
    if provider == "snowflake":
        if spec["snowflake"]["authMethod"] == "keyPair":
            return {"username": b"probe", "private_key": S.rsa_pem()}
        return {"username": b"probe", "password": b"pw-0123456789"}
    return {
        "service_account.json": S.service_account_json(
            "http://127.0.0.1:9/token", S.rsa_pem().decode()
        )
    }


@st.composite
def key_maps(draw: st.DrawFn, logical: list[str]) -> dict[str, str]:
    """Maybe rename some keys (``credentialsSecretRef.keys``)."""
    out = {}
    for key in logical:
        if draw(st.booleans()):
            out[key] = draw(st.sampled_from(["alt-" + key.replace(".", "-"), key.upper()]))
    return out


def encode(values: dict[str, bytes], key_map: dict[str, str]) -> dict[str, Any]:
    return {key_map.get(k, k): S.b64(v) for k, v in values.items()}


@fuzz(300)
@given(data=st.data())
def test_good_credentials_reach_the_egress_check(network_audit: NetworkAudit, data: Any) -> None:
    spec = data.draw(valid_specs())
    values = needed_keys(spec)
    key_map = data.draw(key_maps(list(values)))
    if key_map:
        spec["credentialsSecretRef"]["keys"] = key_map
    result, calls = run(spec, encode(values, key_map), network_audit)
    assert_well_formed(result, calls)
    assert result.reason is Reason.DESTINATION_DENIED, result
    assert [c.name for c in result.checks] == ["spec", "credentials", "destination"]


@fuzz(300)
@given(data=st.data())
def test_missing_or_empty_key_is_secret_key_missing(network_audit: NetworkAudit, data: Any) -> None:
    spec = data.draw(valid_specs())
    values = needed_keys(spec)
    victim = data.draw(st.sampled_from(sorted(values)))
    secret = encode(values, {})
    if data.draw(st.booleans()):
        del secret[victim]
    else:
        secret[victim] = ""  # present but empty
    if victim == "username" and data.draw(st.booleans()):
        secret["user"] = ""  # the alias is empty too
    result, calls = run(spec, secret, network_audit)
    event(f"victim={victim}")
    assert_well_formed(result, calls)
    assert result.reason is Reason.SECRET_KEY_MISSING, result
    assert repr(victim) in result.message


@st.composite
def broken_values(draw: st.DrawFn, key: str) -> Any:
    """A present, non-empty value under ``key`` that cannot be used."""
    choices = ["not-base64", "not-a-string"]
    if key in ("username", "password", "user"):
        choices.append("not-utf8")
    if key in ("ca.crt", "private_key"):
        choices.append("bad-pem")
    if key == "service_account.json":
        choices.append("bad-key")
    kind = draw(st.sampled_from(choices))
    event(f"broken={key}:{kind}")
    if kind == "not-base64":
        return draw(st.sampled_from(["%%%", "YQ", "abc", "a b c d", "====", "Zm9v\x00"]))
    if kind == "not-a-string":
        return draw(S.non_null_junk.filter(lambda v: not isinstance(v, str)))
    if kind == "not-utf8":
        return S.b64(draw(st.sampled_from([b"\xff", b"\xc3\x28", b"pw\x80", b"\xed\xa0\x80"])))
    if kind == "bad-pem":
        return S.b64(draw(S.malformed_pems()))
    keys = draw(
        st.sampled_from([b"{", b"[]", b"null", b"\xff", b'{"type": "service_account"}'])
        | st.builds(
            S.service_account_json,
            st.just("http://127.0.0.1:9/token"),
            S.malformed_pems().map(lambda b: b.decode("latin-1")),
        )
        | st.just(S.service_account_json("ftp://127.0.0.1/token", S.rsa_pem().decode()))
        | st.just(S.service_account_json("http://127.0.0.1:9/token", S.ec_pem().decode()))
        | st.just(
            S.service_account_json("http://127.0.0.1:9/token", S.encrypted_rsa_pem().decode())
        )
    )
    return S.b64(keys)


@fuzz(300)
@given(data=st.data())
def test_malformed_key_is_invalid_credentials(network_audit: NetworkAudit, data: Any) -> None:
    spec = data.draw(valid_specs())
    values = needed_keys(spec)
    if spec["provider"] in ("postgres", "postgresql") and data.draw(st.booleans()):
        values["ca.crt"] = b"placeholder"
    victim = data.draw(st.sampled_from(sorted(values)))
    secret = encode(values, {})
    secret[victim] = data.draw(broken_values(victim))
    result, calls = run(spec, secret, network_audit)
    assert_well_formed(result, calls)
    assert result.reason is Reason.INVALID_CREDENTIALS, (result, victim)


@fuzz(100)
@given(data=st.data())
def test_wrong_passphrase_is_invalid_credentials(network_audit: NetworkAudit, data: Any) -> None:
    spec = data.draw(valid_specs("snowflake"))
    spec["snowflake"]["authMethod"] = "keyPair"
    secret = encode({"username": b"probe", "private_key": S.encrypted_rsa_pem()}, {})
    passphrase = data.draw(st.none() | st.binary(min_size=1, max_size=40))
    if passphrase == b"right-passphrase":
        passphrase = b"wrong"
    if passphrase is not None:
        secret["private_key_passphrase"] = S.b64(passphrase)
    result, calls = run(spec, secret, network_audit)
    assert_well_formed(result, calls)
    assert result.reason is Reason.INVALID_CREDENTIALS, result
    # the right one gets through to the egress check
    secret["private_key_passphrase"] = S.b64(b"right-passphrase")
    result, calls = run(spec, secret, network_audit)
    assert result.reason is Reason.DESTINATION_DENIED, result


WRONG = {
    "provider": S.non_null_junk.filter(lambda v: v not in S.PROVIDER_NAMES),
    "credentialsSecretRef": S.non_null_junk.filter(lambda v: not isinstance(v, dict)),
    "testTimeout": st.sampled_from(S.BAD_DURATIONS)
    | S.non_null_junk.filter(lambda v: not isinstance(v, str)),
    "testInterval": st.sampled_from(S.BAD_DURATIONS)
    | S.non_null_junk.filter(lambda v: not isinstance(v, str)),
    "suspend": S.non_null_junk.filter(lambda v: not isinstance(v, bool)),
    "displayName": st.sampled_from(["", "x" * 101])
    | S.non_null_junk.filter(lambda v: not isinstance(v, str)),
}
WRONG_IN_BLOCK = {
    "postgres": {
        "host": S.invalid_host(),
        "port": st.sampled_from([0, -1, 65536, "5432", 5432.5, True, None]),
        "database": st.sampled_from(["", 7, None, ["db"]]),
        "sslMode": st.sampled_from(["", "on", "REQUIRE", "verify", None]),
    },
    "postgresql": {"host": S.invalid_host(), "port": st.sampled_from([0, "x"])},
    "snowflake": {
        "account": st.sampled_from(["", "a b", "acme/x", "ä", None]),
        "authMethod": st.sampled_from(["oauth", "", "KEYPAIR", None]),
        "endpoint": st.sampled_from(["ftp://127.0.0.1", "http://u:p@127.0.0.1", "127.0.0.1", ""]),
    },
    "bigquery": {
        "projectId": st.sampled_from(["", 1, None]),
        "endpoint": st.sampled_from(["gopher://127.0.0.1", "http://127.0.0.1 x", ""]),
    },
}


@fuzz(300)
@given(data=st.data())
def test_one_wrong_field_is_invalid_spec(network_audit: NetworkAudit, data: Any) -> None:
    spec = data.draw(valid_specs())
    provider = spec["provider"]
    block = "postgres" if provider == "postgresql" else provider
    values = needed_keys(spec)
    if data.draw(st.booleans()):
        field = data.draw(st.sampled_from(sorted(WRONG)))
        spec[field] = data.draw(WRONG[field])
    else:
        field = data.draw(st.sampled_from(sorted(WRONG_IN_BLOCK[provider])))
        value = data.draw(WRONG_IN_BLOCK[provider][field])
        if value is None:
            spec[block].pop(field, None)
            if field not in ("host", "database", "account", "projectId"):
                spec[block][field] = None  # an explicit null where a value is needed
        else:
            spec[block][field] = value
    event(f"wrong={field}")
    result, calls = run(spec, encode(values, {}), network_audit)
    assert_well_formed(result, calls)
    assert result.reason is Reason.INVALID_SPEC, (result, spec)
    assert calls == []


@fuzz(200)
@given(data=st.data())
def test_provider_block_missing_or_for_another_provider(
    network_audit: NetworkAudit, data: Any
) -> None:
    spec = data.draw(valid_specs())
    block = "postgres" if spec["provider"] == "postgresql" else spec["provider"]
    moved = spec.pop(block)
    other = data.draw(
        st.sampled_from([b for b in ("postgres", "snowflake", "bigquery") if b != block] + [None])
    )
    if other is not None:
        spec[other] = moved
    result, calls = run(spec, encode(needed_keys({**spec, block: moved}), {}), network_audit)
    assert_well_formed(result, calls)
    assert result.reason is Reason.INVALID_SPEC
    if other is None:
        assert f"spec.{block} is required" in result.message, result.message
