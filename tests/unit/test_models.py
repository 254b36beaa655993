import pytest

from warehouse_operator.models import InvalidSpecError, Reason, parse_duration, parse_spec

BASE = {
    "provider": "postgres",
    "credentialsSecretRef": {"name": "db"},
    "postgres": {"host": "db.example.com", "database": "app"},
}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        ("250ms", 0.25),
        ("0s", 0),
        ("1.5s", 1.5),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5x", "-5s", "1d", "s", "5 m", "9" * 40 + "s", "200h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_defaults_and_alias() -> None:
    spec = parse_spec({**BASE, "provider": "postgresql"})
    assert spec.provider == "postgres"
    assert spec.postgres is not None
    assert spec.postgres.port == 5432
    assert spec.postgres.ssl_mode == "prefer"
    assert spec.test_timeout_seconds == 10
    assert spec.test_interval_seconds(default=123) == 123
    assert spec.suspend is False


def test_interval_from_spec_wins_over_default() -> None:
    spec = parse_spec({**BASE, "testInterval": "30s"})
    assert spec.test_interval_seconds(default=300) == 30


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ({"provider": "oracle"}, "spec.provider"),
        ({"postgres": None}, "spec.postgres is required"),
        ({"postgres": {"host": "h", "database": "d", "port": 70000}}, "spec.postgres.port"),
        ({"postgres": {"host": "h", "database": "d", "port": "5432"}}, "spec.postgres.port"),
        (
            {"postgres": {"host": "h", "database": "d", "sslMode": "strict"}},
            "spec.postgres.sslMode",
        ),
        ({"testInterval": "soon"}, "spec.testInterval"),
        ({"testTimeout": "0s"}, "testTimeout must be greater than 0s"),
        ({"credentialsSecretRef": {}}, "spec.credentialsSecretRef.name"),
        ({"suspend": "yes"}, "spec.suspend"),
        ({"displayName": "x" * 101}, "spec.displayName"),
    ],
)
def test_invalid_specs_name_the_field(patch: dict[str, object], fragment: str) -> None:
    raw = {**BASE, **patch}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(InvalidSpecError) as err:
        parse_spec(raw)
    assert fragment in str(err.value)


def test_invalid_spec_message_does_not_echo_values() -> None:
    canary = "s3cr3t-canary-value"
    with pytest.raises(InvalidSpecError) as err:
        parse_spec({**BASE, "postgres": {"host": canary + " bad host", "database": "d"}})
    assert canary not in str(err.value)


@pytest.mark.parametrize("raw", [None, [], "spec", 5])
def test_spec_must_be_an_object(raw: object) -> None:
    with pytest.raises(InvalidSpecError, match="object"):
        parse_spec(raw)


def test_stalled_reasons() -> None:
    assert Reason.INVALID_SPEC.needs_human
    assert Reason.SECRET_NOT_FOUND.needs_human
    assert not Reason.TIMEOUT.needs_human
    assert not Reason.AUTHENTICATION_FAILED.needs_human


@pytest.mark.parametrize("host", ["db.example.com", "10.0.0.5", "::1", "[::1]", "2001:db8::5"])
def test_hosts_accepted(host: str) -> None:
    spec = parse_spec({**BASE, "postgres": {"host": host, "database": "d"}})
    assert spec.postgres is not None
    assert spec.postgres.host == host


@pytest.mark.parametrize("host", ["db\n", "-db", "db example", "db/x", ""])
def test_hosts_rejected(host: str) -> None:
    with pytest.raises(InvalidSpecError, match=r"spec\.postgres\.host"):
        parse_spec({**BASE, "postgres": {"host": host, "database": "d"}})


def test_trailing_newline_is_not_a_duration() -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration("5m\n")
