"""The test runner's pure paths: everything decided before a packet is sent."""

import pytest

from tests.support.encoding import b64
from warehouse_operator.models import CheckResult, Reason
from warehouse_operator.probe import EgressPolicy, Redactor, run_test

CANARY = "Canary-Pa55word-7f3a"


def pg_spec(host: str = "127.0.0.1", **extra: object) -> dict[str, object]:
    return {
        "provider": "postgres",
        "credentialsSecretRef": {"name": "db"},
        "postgres": {"host": host, "port": 1, "database": "app"},
        "testTimeout": "2s",
        **extra,
    }


GOOD_SECRET = {"username": b64("app"), "password": b64(CANARY)}


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.1.2.3", True),
        ("169.254.169.254", False),
        ("fe80::1", False),
        ("::ffff:169.254.169.254", False),
        ("2001:db8::1", True),
    ],
)
def test_default_policy_denies_link_local(address: str, allowed: bool) -> None:
    assert EgressPolicy().permits(address) is allowed


def test_allow_list() -> None:
    policy = EgressPolicy.from_cidrs(["10.0.0.0/8"], ["10.9.0.0/16"])
    assert policy.permits("10.1.1.1")
    assert not policy.permits("10.9.1.1")
    assert not policy.permits("192.0.2.1")
    assert not policy.permits("2001:db8::1")


def test_redactor_removes_values_and_fragments() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nabcdefghijklmnopqrstuvwxyz012345\n-----END PRIVATE KEY-----\n"
    redact = Redactor([CANARY.encode(), pem.encode(), b"ab"])
    text = f"pw={CANARY} quoted={CANARY!r} line=MIIEvQIBADANBgkqhkiG9w0BAQEFAASC url=Canary-Pa55word-7f3a"
    out = redact(text)
    assert CANARY not in out
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" not in out
    assert "[REDACTED]" in out
    # a short value is only removed as a whole word, not from inside other words
    assert redact("tab ab") == "tab [REDACTED]"


async def test_invalid_spec() -> None:
    result = await run_test({"provider": "oracle"}, GOOD_SECRET)
    assert result.reason is Reason.INVALID_SPEC
    assert result.checks[0].name == "spec"
    assert result.checks[0].result is CheckResult.FAILED


async def test_secret_not_found() -> None:
    result = await run_test(pg_spec(), None)
    assert result.reason is Reason.SECRET_NOT_FOUND
    assert "'db'" in result.message


async def test_secret_key_missing() -> None:
    result = await run_test(pg_spec(), {"username": b64("app")})
    assert result.reason is Reason.SECRET_KEY_MISSING
    assert [c.name for c in result.checks] == ["spec", "credentials"]
    assert result.checks[1].result is CheckResult.FAILED


async def test_destination_denied_before_any_packet() -> None:
    policy = EgressPolicy.from_cidrs([], ["127.0.0.0/8"])
    result = await run_test(pg_spec(), GOOD_SECRET, policy=policy)
    assert result.reason is Reason.DESTINATION_DENIED
    assert "127.0.0.1" in result.message
    assert CANARY not in result.model_dump_json()


async def test_metadata_address_denied_by_default() -> None:
    result = await run_test(pg_spec(host="169.254.169.254"), GOOD_SECRET)
    assert result.reason is Reason.DESTINATION_DENIED


async def test_unresolvable_host_is_unreachable() -> None:
    result = await run_test(pg_spec(host="no-such-host.invalid"), GOOD_SECRET)
    assert result.reason in (Reason.UNREACHABLE, Reason.TIMEOUT)
    assert "no-such-host.invalid" in result.message


async def test_password_never_in_result_even_if_echoed() -> None:
    # a spec whose host *is* the password: the message must still not show it
    result = await run_test(pg_spec(host=CANARY), GOOD_SECRET)
    assert result.reason is not Reason.CONNECTED
    assert CANARY not in result.model_dump_json()
