import pytest

from tests.support.encoding import b64
from warehouse_operator.models import ProbeFailure, Reason
from warehouse_operator.secrets import SecretData


def test_logical_keys_and_alias() -> None:
    secret = SecretData("db", {"user": b64("app"), "password": b64("pw")})
    assert secret.require_text("username", "user") == "app"
    assert secret.require_text("password") == "pw"
    assert secret.optional_bytes("ca.crt") is None


def test_key_mapping_reads_other_data_keys() -> None:
    secret = SecretData(
        "db",
        {"PGUSER": b64("app"), "PGPASS": b64("pw")},
        {"username": "PGUSER", "password": "PGPASS"},
    )
    assert secret.require_text("username", "user") == "app"
    assert secret.require_text("password") == "pw"


def test_missing_and_empty_keys_are_secret_key_missing() -> None:
    secret = SecretData("db", {"username": b64("app"), "password": ""})
    with pytest.raises(ProbeFailure) as err:
        secret.require_text("password")
    assert err.value.reason is Reason.SECRET_KEY_MISSING
    assert "'password'" in err.value.message
    assert "'db'" in err.value.message


def test_mapped_missing_key_names_the_data_key() -> None:
    secret = SecretData("db", {}, {"password": "PGPASS"})
    with pytest.raises(ProbeFailure, match="PGPASS"):
        secret.require_text("password")


@pytest.mark.parametrize("raw", ["not base64!!", 12, None])
def test_malformed_values(raw: object) -> None:
    secret = SecretData("db", {"password": raw})
    if raw is None:
        with pytest.raises(ProbeFailure) as err:
            secret.require_text("password")
        assert err.value.reason is Reason.SECRET_KEY_MISSING
    else:
        with pytest.raises(ProbeFailure) as err:
            secret.require_text("password")
        assert err.value.reason is Reason.INVALID_CREDENTIALS


def test_binary_value_is_not_text() -> None:
    secret = SecretData("db", {"password": b64(b"\xff\xfe\x00")})
    with pytest.raises(ProbeFailure) as err:
        secret.require_text("password")
    assert err.value.reason is Reason.INVALID_CREDENTIALS


def test_all_values_for_redaction() -> None:
    secret = SecretData("db", {"a": b64("one"), "b": b64("two"), "c": "%%%"})
    assert sorted(secret.all_values()) == [b"one", b"two"]


def test_from_plain() -> None:
    secret = SecretData.from_plain("db", {"password": "pw"})
    assert secret.require_text("password") == "pw"
