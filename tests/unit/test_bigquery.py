"""The BigQuery provider's pure parts: key parsing, endpoints, dataset names, error classification,
and the deadline-bound transport. No server: exceptions are built the way the
google libraries, requests and urllib3 build them."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests
import urllib3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.api_core import exceptions as core
from google.auth import exceptions as auth

from tests.support.bigquery_keys import ServiceAccount, new_service_account
from warehouse_operator.models import ProbeFailure, Reason, parse_spec
from warehouse_operator.providers.bigquery import PROVIDER
from warehouse_operator.providers.bigquery.calls import (
    UnexpectedAnswer,
    _credentials_class,
    _DeadlineRequest,
)
from warehouse_operator.providers.bigquery.classify import (
    classify_api_error,
    classify_token_error,
    classify_transport_error,
)
from warehouse_operator.providers.bigquery.credentials import parse_service_account_key
from warehouse_operator.providers.bigquery.target import api_endpoint, dataset_reference
from warehouse_operator.providers.blocking import Deadline
from warehouse_operator.secrets import SecretData

EMAIL = "etl@proj.iam.gserviceaccount.com"
TOKEN_URI = "https://oauth2.googleapis.com/token"


@pytest.fixture(scope="module")
def account() -> ServiceAccount:
    return new_service_account(EMAIL)


def key_bytes(account: ServiceAccount, **changes: Any) -> bytes:
    info = account.key_info(token_uri=TOKEN_URI, project_id="proj")
    for name, value in changes.items():
        if value is None:
            info.pop(name, None)
        else:
            info[name] = value
    return json.dumps(info).encode()


def spec(**bigquery: Any) -> Any:
    return parse_spec(
        {
            "provider": "bigquery",
            "credentialsSecretRef": {"name": "sa"},
            "bigquery": {"projectId": "proj", **bigquery},
        }
    )


# --- parsing -----------------------------------------------------------------------------------


def test_valid_key_is_parsed(account: ServiceAccount) -> None:
    creds = parse_service_account_key(key_bytes(account), "sa")
    assert creds.client_email == EMAIL
    assert creds.token_uri == TOKEN_URI
    assert creds.private_key_id == account.key_id
    assert creds.private_key.private_numbers() == account.private_key.private_numbers()


def test_repr_hides_the_private_key(account: ServiceAccount) -> None:
    creds = parse_service_account_key(key_bytes(account), "sa")
    shown = repr(creds) + str(creds)
    assert EMAIL in shown
    assert "private_key=***" in shown
    body = account.private_key_pem.splitlines()[1]
    assert body not in shown


def test_key_with_byte_order_mark_is_accepted(account: ServiceAccount) -> None:
    creds = parse_service_account_key(b"\xef\xbb\xbf" + key_bytes(account), "sa")
    assert creds.client_email == EMAIL


def _pkcs8(key: Any) -> str:
    return str(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
    )


def _encrypted(account: ServiceAccount) -> str:
    return account.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"canary-passphrase"),
    ).decode()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"type": "authorized_user"}, "has no field 'type' equal to 'service_account'"),
        ({"type": None}, "has no field 'type'"),
        ({"client_email": None}, "has no field 'client_email'"),
        ({"client_email": "   "}, "has no field 'client_email'"),
        ({"client_email": "canary-not-an-email"}, "'client_email' that is not an email address"),
        ({"private_key": None}, "has no field 'private_key'"),
        ({"private_key": 42}, "has no field 'private_key'"),
        ({"private_key": "canary-not-a-pem"}, "'private_key' that is not a PEM private key"),
        (
            {"private_key": "-----BEGIN PRIVATE KEY-----\nY2FuYXJ5\n-----END PRIVATE KEY-----\n"},
            "'private_key' that is not a readable PEM private key",
        ),
        ({"token_uri": None}, "has no field 'token_uri'"),
        ({"token_uri": "ftp://canary.example/token"}, "'token_uri' that is not an http(s) URL"),
        ({"token_uri": "https://user:canary@host/token"}, "'token_uri' that is not an http(s) URL"),
        ({"token_uri": "https://host:99999/token"}, "'token_uri' with an invalid port"),
        ({"private_key_id": 7}, "'private_key_id' that is not a string"),
    ],
)
def test_bad_fields_are_named_without_their_values(
    account: ServiceAccount, changes: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ProbeFailure) as caught:
        parse_service_account_key(key_bytes(account, **changes), "sa")
    assert caught.value.reason is Reason.INVALID_CREDENTIALS
    assert expected in caught.value.message
    assert caught.value.message.startswith("the service-account key in Secret 'sa' ")
    assert "canary" not in caught.value.message


def test_encrypted_key_is_refused(account: ServiceAccount) -> None:
    with pytest.raises(ProbeFailure) as caught:
        parse_service_account_key(key_bytes(account, private_key=_encrypted(account)), "sa")
    assert "'private_key' that is encrypted" in caught.value.message


def test_non_rsa_key_is_refused(account: ServiceAccount) -> None:
    ec_key = _pkcs8(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ProbeFailure) as caught:
        parse_service_account_key(key_bytes(account, private_key=ec_key), "sa")
    assert "'private_key' that is not an RSA key" in caught.value.message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"type": "service_account", "private_key": "canary', "is not valid JSON (Unterminated"),
        (b"[1, 2]", "is not a JSON object"),
        (b'"canary"', "is not a JSON object"),
        (b"\xff\xfe canary", "is not UTF-8 text"),
    ],
)
def test_unusable_documents_are_invalid_credentials(raw: bytes, expected: str) -> None:
    with pytest.raises(ProbeFailure) as caught:
        parse_service_account_key(raw, "sa")
    assert caught.value.reason is Reason.INVALID_CREDENTIALS
    assert expected in caught.value.message
    assert "canary" not in caught.value.message


def test_provider_reads_the_logical_key_and_honours_remapping(account: ServiceAccount) -> None:
    raw = key_bytes(account)
    plain = SecretData.from_plain("sa", {"service_account.json": raw})
    assert PROVIDER.parse_credentials(spec(), plain).client_email == EMAIL
    remapped = SecretData.from_plain("sa", {"gcp.json": raw}, {"service_account.json": "gcp.json"})
    assert PROVIDER.parse_credentials(spec(), remapped).client_email == EMAIL
    with pytest.raises(ProbeFailure) as caught:
        PROVIDER.parse_credentials(spec(), SecretData.from_plain("sa", {"other": raw}))
    assert caught.value.reason is Reason.SECRET_KEY_MISSING


# --- endpoints and names -----------------------------------------------------------------------


def test_destinations_default_to_googles_hosts(account: ServiceAccount) -> None:
    creds = parse_service_account_key(key_bytes(account), "sa")
    found = [(d.host, d.port, d.what) for d in PROVIDER.destinations(spec(), creds)]
    assert found == [
        ("bigquery.googleapis.com", 443, "BigQuery API"),
        ("oauth2.googleapis.com", 443, "OAuth token endpoint"),
    ]


def test_destinations_follow_endpoint_and_token_uri(account: ServiceAccount) -> None:
    creds = parse_service_account_key(
        key_bytes(account, token_uri="http://127.0.0.1:8081/token"), "sa"
    )
    custom = spec(endpoint="http://127.0.0.1:9050/")
    found = [(d.host, d.port) for d in PROVIDER.destinations(custom, creds)]
    assert found == [("127.0.0.1", 9050), ("127.0.0.1", 8081)]
    assert api_endpoint(custom.bigquery).url == "http://127.0.0.1:9050"
    same = spec(endpoint="http://127.0.0.1:8081")
    assert [(d.host, d.port) for d in PROVIDER.destinations(same, creds)] == [("127.0.0.1", 8081)]


def test_stage_order() -> None:
    assert PROVIDER.stage_order() == ["authenticate", "query", "dataset"]


@pytest.mark.parametrize(
    ("dataset_id", "expected"),
    [
        ("sales", ("proj", "sales")),
        ("other.sales_2024", ("other", "sales_2024")),
        ("example.com:legacy.sales", ("example.com:legacy", "sales")),
    ],
)
def test_dataset_reference(dataset_id: str, expected: tuple[str, str]) -> None:
    assert dataset_reference(spec(datasetId=dataset_id).bigquery) == expected


@pytest.mark.parametrize("dataset_id", ["sales-2024", "proj.", "a b"])
def test_malformed_dataset_id_is_an_invalid_spec(dataset_id: str) -> None:
    with pytest.raises(ProbeFailure) as caught:
        dataset_reference(spec(datasetId=dataset_id).bigquery)
    assert caught.value.reason is Reason.INVALID_SPEC


def test_no_dataset_means_no_reference() -> None:
    assert dataset_reference(spec().bigquery) is None


# --- classification ----------------------------------------------------------------------------


def refused_connection() -> requests.exceptions.ConnectionError:
    """What requests raises for a refused connection (urllib3 2.x), cause chain included."""
    refused = ConnectionRefusedError(111, "Connection refused")
    try:
        try:
            raise refused
        except OSError as exc:
            message = f"Failed to establish a new connection: {exc}"
            raise urllib3.exceptions.NewConnectionError(None, message) from exc  # type: ignore[arg-type]
    except urllib3.exceptions.NewConnectionError as new:
        retry = urllib3.exceptions.MaxRetryError(None, "/token", reason=new)  # type: ignore[arg-type]
        return requests.exceptions.ConnectionError(retry)


def read_timeout() -> requests.exceptions.ReadTimeout:
    inner = urllib3.exceptions.ReadTimeoutError(None, "/x", "Read timed out. (read timeout=1)")  # type: ignore[arg-type]
    return requests.exceptions.ReadTimeout(inner)


def test_refused_connection_is_unreachable() -> None:
    wrapped = auth.TransportError(refused_connection())  # type: ignore[no-untyped-call]
    reason, message = classify_token_error(wrapped, EMAIL, "127.0.0.1:9")
    assert reason is Reason.UNREACHABLE
    assert message == "cannot reach the OAuth token endpoint at 127.0.0.1:9: connection refused"
    assert classify_transport_error(refused_connection(), "BigQuery API", "h:1") == (
        Reason.UNREACHABLE,
        "cannot reach the BigQuery API at h:1: connection refused",
    )


def test_timeouts_are_timeouts() -> None:
    assert classify_transport_error(read_timeout(), "BigQuery API", "h:1") == (
        Reason.TIMEOUT,
        "the BigQuery API at h:1 did not answer in time",
    )
    reason, _ = classify_token_error(TimeoutError("budget spent"), EMAIL, "h:1")
    assert reason is Reason.TIMEOUT


def test_dns_failure_and_tls_failure() -> None:
    import socket
    import ssl

    dns = requests.exceptions.ConnectionError(socket.gaierror(-2, "Name or service not known"))
    assert classify_transport_error(dns, "BigQuery API", "h:1") == (
        Reason.UNREACHABLE,
        "cannot reach the BigQuery API at h:1: its name could not be resolved (DNS)",
    )
    tls = requests.exceptions.SSLError(ssl.SSLCertVerificationError(1, "certificate verify failed"))
    reason, message = classify_transport_error(tls, "BigQuery API", "h:1") or (None, "")
    assert reason is Reason.TLS_ERROR
    assert (
        message
        == "TLS with the BigQuery API at h:1 failed: the server's certificate did not verify"
    )


def test_reset_connection_is_unreachable() -> None:
    reset = requests.exceptions.ConnectionError(
        ConnectionResetError(104, "Connection reset by peer")
    )
    reason, message = classify_transport_error(reset, "BigQuery API", "h:1") or (None, "")
    assert reason is Reason.UNREACHABLE
    assert "closed the connection" in message


def test_unrelated_exception_is_not_a_transport_error() -> None:
    assert classify_transport_error(ValueError("x"), "BigQuery API", "h:1") is None


@pytest.mark.parametrize(
    ("error", "description", "expected_reason", "hint"),
    [
        ("invalid_grant", "Invalid JWT Signature.", Reason.AUTHENTICATION_FAILED, "no longer"),
        (
            "invalid_grant",
            "Invalid grant: account not found",
            Reason.AUTHENTICATION_FAILED,
            "does not exist",
        ),
        ("unauthorized_client", "Client is unauthorized", Reason.AUTHENTICATION_FAILED, ""),
        ("invalid_scope", "Invalid OAuth scope", Reason.PROVIDER_ERROR, ""),
    ],
)
def test_token_endpoint_refusals(
    error: str, description: str, expected_reason: Reason, hint: str
) -> None:
    refusal = auth.RefreshError(  # type: ignore[no-untyped-call]
        f"{error}: {description}", {"error": error, "error_description": description}
    )
    reason, message = classify_token_error(refusal, EMAIL, "oauth2.googleapis.com:443")
    assert reason is expected_reason
    assert f"{error}: {description}" in message
    assert hint in message


def test_token_endpoint_refusal_without_a_json_body() -> None:
    refusal = auth.RefreshError("<html>502 Bad Gateway</html>", retryable=True)  # type: ignore[no-untyped-call]
    reason, message = classify_token_error(refusal, EMAIL, "h:443")
    assert reason is Reason.PROVIDER_ERROR
    assert "issued no access token" in message


def api_error(cls: type[core.GoogleAPICallError], reason: str, message: str) -> Any:
    return cls(message, errors=[{"reason": reason, "message": message, "domain": "global"}])


def classify(exc: BaseException, stage: str = "query") -> tuple[Reason, str]:
    return classify_api_error(
        exc,
        stage=stage,
        email=EMAIL,
        project="proj",
        dataset=("proj", "sales") if stage == "dataset" else None,
        where="bigquery.googleapis.com:443",
    )


def test_access_denied_is_permission_denied() -> None:
    denied = api_error(core.Forbidden, "accessDenied", "Access Denied: Project proj: nope")
    reason, message = classify(denied)
    assert reason is Reason.PERMISSION_DENIED
    assert message.startswith(f"{EMAIL!r} may not run query jobs in project proj")
    reason, message = classify(denied, "dataset")
    assert reason is Reason.PERMISSION_DENIED
    assert "may not read dataset proj:sales" in message


def test_quota_errors_are_provider_errors() -> None:
    limited = api_error(core.Forbidden, "rateLimitExceeded", "Exceeded rate limits")
    assert classify(limited)[0] is Reason.PROVIDER_ERROR


def test_not_found_says_whether_project_or_dataset() -> None:
    dataset = api_error(core.NotFound, "notFound", "Not found: Dataset proj:sales")
    assert classify(dataset, "dataset") == (
        Reason.NOT_FOUND,
        "dataset proj:sales was not found: Not found: Dataset proj:sales",
    )
    project = api_error(core.NotFound, "notFound", "Not found: Project proj")
    assert classify(project, "query")[1].startswith("project proj was not found")
    assert classify(project, "dataset")[1].startswith("project proj was not found")


def test_unauthorized_is_authentication_failed() -> None:
    rejected = api_error(core.Unauthorized, "authError", "Request had invalid authentication")
    reason, message = classify(rejected)
    assert reason is Reason.AUTHENTICATION_FAILED
    assert "did not accept the access token" in message


def test_retry_error_is_classified_by_its_cause() -> None:
    unavailable = api_error(core.ServiceUnavailable, "backendError", "try later")
    retried = core.RetryError("Timeout of 2.0s exceeded", unavailable)  # type: ignore[no-untyped-call]
    reason, message = classify(retried)
    assert reason is Reason.PROVIDER_ERROR
    assert "HTTP 503" in message
    refused = core.RetryError("Timeout", refused_connection())  # type: ignore[no-untyped-call]
    assert classify(refused)[0] is Reason.UNREACHABLE


def test_unexpected_answer_and_other_errors_are_provider_errors() -> None:
    assert classify(UnexpectedAnswer("SELECT 1 returned []"))[0] is Reason.PROVIDER_ERROR
    bad_request = api_error(core.BadRequest, "invalidQuery", "Syntax error")
    assert classify(bad_request) == (
        Reason.PROVIDER_ERROR,
        "the BigQuery API answered HTTP 400: Syntax error",
    )
    reason, message = classify(RuntimeError("boom"))
    assert reason is Reason.PROVIDER_ERROR
    assert "RuntimeError: boom" in message


# --- the deadline, the credentials class -------------------------------------


class RecordingTransport:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, url: str, **kwargs: Any) -> str:
        self.calls.append({"url": url, **kwargs})
        return "answer"


def test_deadline_request_bounds_each_request() -> None:
    inner = RecordingTransport()
    request = _DeadlineRequest(inner, Deadline(time.monotonic() + 2))
    assert request("https://t/token", method="POST", body=b"x") == "answer"
    assert 1.5 < inner.calls[0]["timeout"] <= 2
    request("https://t/token", timeout=0.5)
    assert inner.calls[1]["timeout"] == 0.5
    request("https://t/token", timeout=120)
    assert inner.calls[2]["timeout"] <= 2


def test_deadline_request_starts_nothing_once_the_budget_is_spent() -> None:
    inner = RecordingTransport()
    request = _DeadlineRequest(inner, Deadline(time.monotonic() - 0.1))
    with pytest.raises(TimeoutError):
        request("https://t/token", method="POST")
    assert inner.calls == []


def test_credentials_never_look_up_regional_access_boundaries(account: ServiceAccount) -> None:
    """That lookup would call iamcredentials.googleapis.com, a host the egress policy never saw."""
    from google.auth.crypt import RSASigner

    creds = _credentials_class()(
        RSASigner(account.private_key, key_id=account.key_id),  # type: ignore[no-untyped-call]
        service_account_email=EMAIL,
        token_uri=TOKEN_URI,
        scopes=["https://www.googleapis.com/auth/bigquery"],
    )
    assert creds._is_regional_access_boundary_lookup_required() is False
