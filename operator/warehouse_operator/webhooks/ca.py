"""The webhook's own CA and serving certificates (pure: no I/O but the clock).

A CA and a serving certificate signed by it; both renewed when a third of their lifetime is
left, the old CA kept in the bundle until it expires, so that replicas still serving a
certificate of the old CA stay trusted meanwhile.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _backdate(valid_for: dt.timedelta) -> dt.timedelta:
    """Start validity a little in the past: clocks of the API server and ours differ."""
    return min(dt.timedelta(minutes=5), valid_for / 10)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def generate_ca(
    common_name: str, valid_for: dt.timedelta, now: dt.datetime | None = None
) -> tuple[bytes, bytes]:
    """A self-signed CA: (certificate PEM, key PEM)."""
    now = now or _now()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _backdate(valid_for))
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def issue_serving_certificate(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    dns_names: Sequence[str],
    valid_for: dt.timedelta,
    now: dt.datetime | None = None,
) -> tuple[bytes, bytes]:
    """A server certificate for ``dns_names`` signed by the CA: (certificate PEM, key PEM)."""
    now = now or _now()
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = min(now + valid_for, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _backdate(valid_for))
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names the API server may use to reach the webhook Service."""
    return [
        f"{service}.{namespace}.svc",
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def _lifetime_left(cert: x509.Certificate, now: dt.datetime) -> float:
    """The fraction of the certificate's lifetime still ahead (0 when expired)."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    total = (end - start).total_seconds()
    return max(0.0, (end - now).total_seconds() / total) if total > 0 else 0.0


def _pem_certificates(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        return []


@dataclass(frozen=True)
class CertificateBundle:
    """What the Secret holds: the trusted CAs (newest first), the newest CA's key, the serving pair."""

    ca_pem: bytes
    ca_key_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    SECRET_KEYS = ("ca.crt", "ca.key", "tls.crt", "tls.key")

    @classmethod
    def from_secret_data(cls, data: Mapping[str, Any] | None) -> CertificateBundle | None:
        if not isinstance(data, Mapping) or not all(k in data for k in cls.SECRET_KEYS):
            return None
        try:
            values = [base64.b64decode(str(data[k]), validate=True) for k in cls.SECRET_KEYS]
        except ValueError:
            return None
        return cls(*values)

    def secret_data(self) -> dict[str, str]:
        values = (self.ca_pem, self.ca_key_pem, self.cert_pem, self.key_pem)
        return {
            k: base64.b64encode(v).decode() for k, v in zip(self.SECRET_KEYS, values, strict=True)
        }

    def usable(self, dns_names: Sequence[str], now: dt.datetime, renew_at: float) -> bool:
        """True while the serving certificate covers ``dns_names``, is signed by the current CA,
        matches its key, and both have more than ``renew_at`` of their lifetime left."""
        cas = _pem_certificates(self.ca_pem)
        certs = _pem_certificates(self.cert_pem)
        if not cas or not certs:
            return False
        ca, cert = cas[0], certs[0]
        try:
            ca_key = serialization.load_pem_private_key(self.ca_key_pem, password=None)
            key = serialization.load_pem_private_key(self.key_pem, password=None)
            cert.verify_directly_issued_by(ca)
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except (ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
            return False
        if ca_key.public_key() != ca.public_key() or key.public_key() != cert.public_key():
            return False
        if not set(dns_names) <= set(names.value.get_values_for_type(x509.DNSName)):
            return False
        return _lifetime_left(ca, now) > renew_at and _lifetime_left(cert, now) > renew_at


def renew_bundle(
    old: CertificateBundle | None,
    dns_names: Sequence[str],
    *,
    ca_validity: dt.timedelta,
    cert_validity: dt.timedelta,
    renew_at: float,
    now: dt.datetime | None = None,
) -> CertificateBundle:
    """A new serving certificate; from the same CA while that has more than ``renew_at`` of its
    life left, else from a new CA, with the old CAs kept in the bundle until they expire (so
    that replicas still serving a certificate of the old CA stay trusted meanwhile)."""
    now = now or _now()
    old_cas = _pem_certificates(old.ca_pem) if old is not None else []
    ca_pem, ca_key_pem = (old.ca_pem, old.ca_key_pem) if old is not None else (b"", b"")
    reuse = False
    if old_cas:
        try:
            key = serialization.load_pem_private_key(old.ca_key_pem, password=None) if old else None
            reuse = (
                key is not None
                and key.public_key() == old_cas[0].public_key()
                and _lifetime_left(old_cas[0], now) > renew_at
            )
        except (ValueError, TypeError):
            reuse = False
    if reuse:
        current_ca = old_cas[0].public_bytes(serialization.Encoding.PEM)
        kept = [c for c in old_cas[1:] if c.not_valid_after_utc > now]
    else:
        current_ca, ca_key_pem = generate_ca("warehouse-operator-webhook-ca", ca_validity, now)
        kept = [c for c in old_cas if c.not_valid_after_utc > now]
    ca_pem = current_ca + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in kept)
    cert_pem, key_pem = issue_serving_certificate(
        current_ca, ca_key_pem, dns_names, cert_validity, now
    )
    return CertificateBundle(ca_pem, ca_key_pem, cert_pem, key_pem)
