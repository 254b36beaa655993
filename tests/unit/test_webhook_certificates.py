"""The webhook's CA and serving certificates: issuing, renewal, and loading for serving."""

from __future__ import annotations

import base64
import datetime as dt
import ssl

import pytest
from cryptography import x509

from warehouse_operator.webhooks import (
    CertificateBundle,
    SelfSignedOptions,
    ServingContext,
    generate_ca,
    issue_serving_certificate,
    renew_bundle,
    service_dns_names,
)

NOW = dt.datetime.now(dt.UTC)
NAMES = service_dns_names("whc-webhook", "ops")


# --- certificates --------------------------------------------------------------------------------


def _bundle(
    ca_days: float = 3650, cert_days: float = 365, names: list[str] = NAMES
) -> CertificateBundle:
    ca, ca_key = generate_ca("test CA", dt.timedelta(days=ca_days))
    cert, key = issue_serving_certificate(ca, ca_key, names, dt.timedelta(days=cert_days))
    return CertificateBundle(ca, ca_key, cert, key)


def _renew(old: CertificateBundle, now: dt.datetime | None = None) -> CertificateBundle:
    """``renew_bundle`` with the operator's default lifetimes (CA 10 years, certificate 1 year,
    renewal with a third of the life left)."""
    return renew_bundle(
        old,
        NAMES,
        ca_validity=dt.timedelta(days=3650),
        cert_validity=dt.timedelta(days=365),
        renew_at=1 / 3,
        now=now,
    )


def test_service_names_cover_how_the_api_server_dials() -> None:
    assert NAMES == [
        "whc-webhook.ops.svc",
        "whc-webhook",
        "whc-webhook.ops",
        "whc-webhook.ops.svc.cluster.local",
    ]
    options = SelfSignedOptions(
        namespace="ops",
        service="whc-webhook",
        secret_name="whc-webhook-tls",
        webhook_config="whc",
        extra_dns_names=("localhost",),
    )
    assert options.dns_names == [*NAMES, "localhost"]


def test_serving_certificate_is_a_server_certificate_for_the_names() -> None:
    bundle = _bundle()
    cert = x509.load_pem_x509_certificate(bundle.cert_pem)
    ca = x509.load_pem_x509_certificate(bundle.ca_pem)
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == NAMES
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usage
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_secret_data_round_trip() -> None:
    bundle = _bundle()
    data = bundle.secret_data()
    assert set(data) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    assert base64.b64decode(data["tls.crt"]) == bundle.cert_pem
    assert CertificateBundle.from_secret_data(data) == bundle
    assert CertificateBundle.from_secret_data({"tls.crt": data["tls.crt"]}) is None
    assert CertificateBundle.from_secret_data({**data, "tls.key": "%%%"}) is None
    assert CertificateBundle.from_secret_data(None) is None


def test_usable_bundle_checks() -> None:
    bundle = _bundle()
    assert bundle.usable(NAMES, NOW, 1 / 3)
    # a name the certificate does not cover
    assert not bundle.usable([*NAMES, "other.ops.svc"], NOW, 1 / 3)
    # a key that is not the certificate's
    other = _bundle()
    assert not CertificateBundle(
        bundle.ca_pem, bundle.ca_key_pem, bundle.cert_pem, other.key_pem
    ).usable(NAMES, NOW, 1 / 3)
    # a certificate from another CA
    assert not CertificateBundle(
        bundle.ca_pem, bundle.ca_key_pem, other.cert_pem, other.key_pem
    ).usable(NAMES, NOW, 1 / 3)
    # close to the end of its life (less than a third left)
    later = NOW + dt.timedelta(days=300)
    assert not bundle.usable(NAMES, later, 1 / 3)
    assert not CertificateBundle(b"junk", b"junk", b"junk", b"junk").usable(NAMES, NOW, 1 / 3)


def test_renewal_keeps_a_healthy_ca() -> None:
    old = _bundle()
    new = _renew(old)
    assert new.ca_pem == old.ca_pem
    assert new.ca_key_pem == old.ca_key_pem
    assert new.cert_pem != old.cert_pem
    assert new.usable(NAMES, NOW, 1 / 3)


def test_renewal_replaces_an_ageing_ca_and_keeps_the_old_one_trusted() -> None:
    old = _bundle(ca_days=30, cert_days=10)
    later = NOW + dt.timedelta(days=25)  # less than a third of the CA's life left
    new = _renew(old, later)
    cas = x509.load_pem_x509_certificates(new.ca_pem)
    assert len(cas) == 2
    assert cas[1] == x509.load_pem_x509_certificate(old.ca_pem)
    x509.load_pem_x509_certificate(new.cert_pem).verify_directly_issued_by(cas[0])
    assert new.ca_key_pem != old.ca_key_pem
    # once the old CA has expired it leaves the bundle at the next renewal
    much_later = NOW + dt.timedelta(days=400)
    newer = _renew(new, much_later)
    assert len(x509.load_pem_x509_certificates(newer.ca_pem)) == 1


def test_serving_certificate_never_outlives_its_ca() -> None:
    ca, ca_key = generate_ca("short CA", dt.timedelta(days=10))
    cert, _ = issue_serving_certificate(ca, ca_key, NAMES, dt.timedelta(days=365))
    assert (
        x509.load_pem_x509_certificate(cert).not_valid_after_utc
        <= x509.load_pem_x509_certificate(ca).not_valid_after_utc
    )


def test_serving_context_refuses_a_mismatched_pair_and_keeps_the_old_one() -> None:
    serving = ServingContext()
    good = _bundle()
    assert serving.load_pem(good.cert_pem, good.key_pem) is True
    assert serving.load_pem(good.cert_pem, good.key_pem) is False  # already loaded
    before = serving.fingerprint
    with pytest.raises(ssl.SSLError):
        serving.load_pem(good.cert_pem, _bundle().key_pem)
    assert serving.fingerprint == before
    assert serving.context.minimum_version == ssl.TLSVersion.TLSv1_2
