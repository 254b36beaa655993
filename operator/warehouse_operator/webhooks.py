"""The validating admission webhook: delete-in-use protection and one connection per namespace.

An HTTPS aiohttp server answers ``POST /validate`` with AdmissionReview ``admission.k8s.io/v1``:

- DELETE of a WarehouseConnection that objects of the in-use kinds in its namespace use (label
  ``warehouse-operator.io/connection: <name>``) is refused with ``status.code: 409`` (reason
  ``Conflict``) and a message naming them (``deployment/api, job/etl``), unless the connection
  carries ``warehouse-operator.io/allow-delete-in-use: "true"`` or its namespace is being
  deleted (namespace deletion removes the users too and must never hang on this webhook);
- CREATE, with ``--one-connection-per-namespace``, is refused (403 Forbidden, like an exceeded
  quota) when the namespace already has a connection that is not being deleted.

The users are read from the API (a LIST per kind with a label selector) at the moment of the
request, so the answer never depends on a warm cache; when those reads fail the request is
refused (500), which the override annotation always gets around.

What happens when the webhook itself cannot be reached is the ValidatingWebhookConfiguration's
``failurePolicy`` (the chart's choice): ``Fail`` (fail closed: no deletion of any connection
while no replica answers) or ``Ignore`` (fail open: deletions go through unchecked, and the
in-use finalizer is then the only protection).

Serving certificate: either from ``--webhook-cert-dir`` (``tls.crt``/``tls.key``, e.g. a
cert-manager Secret mounted there; reloaded when the files change), or self-managed: a CA and
a serving certificate generated here, kept in a Secret shared by all replicas (they must all
present certificates from the CA the API server trusts), rotated before expiry (the serving
certificate when a third of its lifetime is left, the CA likewise, with the old CA kept in the
bundle until it expires), and the CA bundle written into the ValidatingWebhookConfiguration's
``caBundle`` (restored if a deployment tool resets it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import logging
import os
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client import Counter

from warehouse_operator.inuse import (
    InUseKind,
    allows_delete_in_use,
    format_users,
    list_users,
)
from warehouse_operator.kube.errors import Conflict, describe
from warehouse_operator.kube.paths import CONNECTIONS, connection_path, object_path
from warehouse_operator.kube.port import KubeApi
from warehouse_operator.metrics import REGISTRY
from warehouse_operator.models import (
    ALLOW_DELETE_IN_USE_ANNOTATION,
    CONNECTION_LABEL,
    GROUP,
    KIND,
    PLURAL,
)

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/validate"
ADMISSION_API_VERSION = "admission.k8s.io/v1"
WEBHOOK_CONFIG_API = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
LOOKUP_TIMEOUT = 8.0  # under the API server's default webhook timeout (10 s)
MAX_REQUEST_BYTES = 3 * 1024 * 1024  # the API server's own request size limit

ADMISSION_REVIEWS = Counter(
    "warehouse_operator_admission_reviews",  # exposed as ..._total
    "Admission reviews answered, by operation and outcome (allowed, denied, error).",
    ["operation", "outcome"],
    registry=REGISTRY,
)


# --- decisions (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    allowed: bool
    code: int = 200
    reason: str = ""
    message: str = ""

    @property
    def outcome(self) -> str:
        return "allowed" if self.allowed else "error" if self.code >= 500 else "denied"


ALLOW = Decision(True)


def decide_delete(
    connection: Mapping[str, Any], users: Sequence[str], namespace_terminating: bool = False
) -> Decision:
    """DELETE of a connection: refused (409) while something uses it, unless overridden."""
    if not users or namespace_terminating or allows_delete_in_use(connection):
        return ALLOW
    meta = connection.get("metadata")
    name = meta.get("name", "") if isinstance(meta, Mapping) else ""
    return Decision(
        False,
        409,
        "Conflict",
        f"{KIND} {name!r} is in use by {format_users(users)}: remove their {CONNECTION_LABEL} "
        f"label or delete them first, or annotate the connection "
        f'{ALLOW_DELETE_IN_USE_ANNOTATION}="true" to delete it anyway',
    )


def decide_create(
    connection: Mapping[str, Any], others: Sequence[Mapping[str, Any]], one_per_namespace: bool
) -> Decision:
    """CREATE: with the one-per-namespace policy, refused (403) when another one exists."""
    if not one_per_namespace:
        return ALLOW
    meta = connection.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    existing = sorted(
        str(o["metadata"].get("name"))
        for o in others
        if isinstance(o.get("metadata"), Mapping)
        and o["metadata"].get("name") != meta.get("name")
        and o["metadata"].get("deletionTimestamp") is None
    )
    if not existing:
        return ALLOW
    return Decision(
        False,
        403,
        "Forbidden",
        f"namespace {meta.get('namespace', '')!r} already has a {KIND} ({', '.join(existing)}); "
        "this operator allows one per namespace",
    )


def review_response(uid: str, decision: Decision) -> dict[str, Any]:
    """The AdmissionReview answer for one request."""
    response: dict[str, Any] = {"uid": uid, "allowed": decision.allowed}
    if not decision.allowed:
        response["status"] = {
            "status": "Failure",
            "code": decision.code,
            "reason": decision.reason,
            "message": decision.message,
        }
    return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "response": response}


def _is_connection(request: Mapping[str, Any]) -> bool:
    resource = request.get("resource")
    kind = request.get("kind")
    if isinstance(resource, Mapping):
        return resource.get("group") == GROUP and resource.get("resource") == PLURAL
    return isinstance(kind, Mapping) and kind.get("group") == GROUP and kind.get("kind") == KIND


# --- lookups (the API) ---------------------------------------------------------------------------


class Admission:
    """Answers AdmissionReviews, reading what it needs from the API."""

    def __init__(
        self,
        api: KubeApi,
        *,
        in_use_kinds: Sequence[InUseKind],
        one_connection_per_namespace: bool,
    ) -> None:
        self.api = api
        self.in_use_kinds = tuple(in_use_kinds)
        self.one_connection_per_namespace = one_connection_per_namespace

    async def users_of(self, namespace: str, name: str) -> list[str]:
        return await list_users(self.api, self.in_use_kinds, namespace, name, LOOKUP_TIMEOUT)

    async def namespace_terminating(self, namespace: str) -> bool:
        """Whether the namespace is being deleted; False when that cannot be read (the
        refusal then stands: the users are known)."""
        try:
            body = await self.api.get_object(
                object_path("v1", "namespaces", name=namespace), timeout=LOOKUP_TIMEOUT, retries=1
            )
        except Exception as exc:
            logger.debug("namespace %s could not be read: %s", namespace, type(exc).__name__)
            return False
        if not isinstance(body, Mapping):
            return True  # gone already
        meta, status = body.get("metadata") or {}, body.get("status") or {}
        return bool(meta.get("deletionTimestamp")) or status.get("phase") == "Terminating"

    async def decide(self, request: Mapping[str, Any]) -> Decision:
        if not _is_connection(request):
            return ALLOW
        operation = request.get("operation")
        namespace = str(request.get("namespace") or "")
        name = str(request.get("name") or "")
        if operation == "DELETE":
            old = request.get("oldObject")
            if not isinstance(old, Mapping):
                old = await self.api.get_object(
                    connection_path(namespace, name),
                    timeout=LOOKUP_TIMEOUT,
                    retries=1,
                )
                if not isinstance(old, Mapping):
                    return ALLOW  # nothing left to protect
            if allows_delete_in_use(old):
                return ALLOW  # no API call at all: the override works even when reads fail
            users = await self.users_of(namespace, name)
            if users and await self.namespace_terminating(namespace):
                return ALLOW
            return decide_delete(old, users)
        if operation == "CREATE" and self.one_connection_per_namespace:
            obj = request.get("object")
            obj = dict(obj) if isinstance(obj, Mapping) else {}
            meta = dict(obj.get("metadata") or {})
            meta.setdefault("namespace", namespace)
            meta.setdefault("name", name)
            obj["metadata"] = meta
            listing = await self.api.list_objects(
                object_path(CONNECTIONS, PLURAL, namespace),
                timeout=LOOKUP_TIMEOUT,
                retries=1,
            )
            items = listing.get("items")
            others = [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []
            return decide_create(obj, others, True)
        return ALLOW

    async def review(self, review: Mapping[str, Any]) -> dict[str, Any]:
        """One AdmissionReview in, its answer out. ValueError when it is not one."""
        request = review.get("request")
        if not isinstance(request, Mapping) or not isinstance(request.get("uid"), str):
            raise ValueError("not an AdmissionReview request")
        operation = str(request.get("operation") or "")
        try:
            decision = await self.decide(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            cause = describe(exc)
            logger.warning(
                "admission of %s %s/%s failed: %s",
                operation,
                request.get("namespace"),
                request.get("name"),
                cause,
            )
            decision = Decision(
                False,
                500,
                "InternalError",
                f"could not check whether the {KIND} is in use ({cause}); try again, or annotate "
                f'it {ALLOW_DELETE_IN_USE_ANNOTATION}="true" to delete it anyway',
            )
        ADMISSION_REVIEWS.labels(operation or "UNKNOWN", decision.outcome).inc()
        if not decision.allowed:
            logger.info(
                "refused %s of %s/%s: %s",
                operation,
                request.get("namespace"),
                request.get("name"),
                decision.message,
            )
        return review_response(request["uid"], decision)


def build_app(admission: Admission) -> web.Application:
    async def validate(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"error": "the body is not JSON"}, status=400)
        if not isinstance(body, Mapping):
            return web.json_response({"error": "not an AdmissionReview"}, status=400)
        try:
            answer = await admission.review(body)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(answer)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app.add_routes([web.post(WEBHOOK_PATH, validate), web.get("/healthz", healthz)])
    return app


# --- certificates ----------------------------------------------------------------------------------


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


class ServingContext:
    """The server's SSLContext; a new certificate is loaded into it in place, so established
    listeners present it on their next handshake."""

    def __init__(self) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.fingerprint: str | None = None
        self.loaded = False

    def load_pem(self, cert_pem: bytes, key_pem: bytes) -> bool:
        """Load the pair; False when it is the one loaded already. ssl.SSLError on a bad pair."""
        fingerprint = hashlib.sha256(cert_pem + b"\0" + key_pem).hexdigest()
        if fingerprint == self.fingerprint:
            return False
        with tempfile.TemporaryDirectory(prefix="whc-webhook-") as folder:
            cert_file, key_file = os.path.join(folder, "tls.crt"), os.path.join(folder, "tls.key")
            for path, data in ((cert_file, cert_pem), (key_file, key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
            # a bad pair would leave a context half-changed: try it on a scratch one first
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_file, key_file)
            self.context.load_cert_chain(cert_file, key_file)
        self.fingerprint = fingerprint
        self.loaded = True
        return True


class DirectoryCertificates:
    """``tls.crt``/``tls.key`` from a folder (a mounted cert-manager Secret), reloaded on change."""

    def __init__(
        self, folder: str | Path, serving: ServingContext, *, poll_interval: float = 5.0
    ) -> None:
        self.folder = Path(folder)
        self.serving = serving
        self.poll_interval = poll_interval
        self.reloads = 0
        self._bad: str | None = None

    def _read(self) -> tuple[bytes, bytes]:
        return (self.folder / "tls.crt").read_bytes(), (self.folder / "tls.key").read_bytes()

    def load(self) -> None:
        """The first load: raises when the files are missing or do not match."""
        cert, key = self._read()
        self.serving.load_pem(cert, key)

    def reload(self) -> bool:
        """True when a new pair was loaded; a half-written or broken pair keeps the old one."""
        try:
            cert, key = self._read()
            changed = self.serving.load_pem(cert, key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            detail = type(exc).__name__
            if detail != self._bad:
                logger.warning(
                    "webhook certificate in %s not loaded (%s); keeping the previous one",
                    self.folder,
                    detail,
                )
            self._bad = detail
            return False
        self._bad = None
        if changed:
            self.reloads += 1
            logger.info("webhook certificate reloaded from %s", self.folder)
        return changed

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            self.reload()


@dataclass(frozen=True)
class SelfSignedOptions:
    namespace: str
    service: str = "warehouse-operator-webhook"
    secret_name: str = "warehouse-operator-webhook-tls"  # noqa: S105  (a name, not a value)
    webhook_config: str = "warehouse-operator"
    ca_validity: dt.timedelta = dt.timedelta(days=3650)
    cert_validity: dt.timedelta = dt.timedelta(days=365)
    renew_at: float = 1 / 3  # renew when a third of the lifetime is left
    check_interval: float = 60.0
    extra_dns_names: tuple[str, ...] = ()

    @property
    def dns_names(self) -> list[str]:
        return service_dns_names(self.service, self.namespace) + list(self.extra_dns_names)


class SelfSignedCertificates:
    """A CA and serving certificate of our own, shared by the replicas through a Secret."""

    def __init__(self, api: KubeApi, serving: ServingContext, options: SelfSignedOptions) -> None:
        self.api = api
        self.serving = serving
        self.options = options
        self.bundle: CertificateBundle | None = None
        self.rotations = 0
        self.ca_bundle_patches = 0

    @property
    def _secret_path(self) -> str:
        return object_path("v1", "secrets", self.options.namespace, self.options.secret_name)

    async def ensure(self) -> CertificateBundle:
        """A usable bundle in the Secret (made or renewed here if needed), loaded for serving."""
        opts = self.options
        for _ in range(5):
            secret = await self.api.get_object(self._secret_path, timeout=LOOKUP_TIMEOUT)
            data = secret.get("data") if isinstance(secret, Mapping) else None
            current = CertificateBundle.from_secret_data(data)
            if current is not None and current.usable(opts.dns_names, _now(), opts.renew_at):
                bundle = current
                break
            bundle = await asyncio.to_thread(
                renew_bundle,
                current,
                opts.dns_names,
                ca_validity=opts.ca_validity,
                cert_validity=opts.cert_validity,
                renew_at=opts.renew_at,
            )
            body: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {
                    "name": opts.secret_name,
                    "namespace": opts.namespace,
                    "labels": {"app.kubernetes.io/managed-by": "warehouse-operator"},
                },
                "data": bundle.secret_data(),
            }
            try:
                if isinstance(secret, Mapping):
                    meta = secret.get("metadata") or {}
                    body["metadata"]["resourceVersion"] = meta.get("resourceVersion")
                    body["metadata"]["labels"] = {
                        **(meta.get("labels") or {}),
                        **body["metadata"]["labels"],
                    }
                    await self.api.replace_object(self._secret_path, body, timeout=LOOKUP_TIMEOUT)
                else:
                    await self.api.create_object(
                        object_path("v1", "secrets", self.options.namespace),
                        body,
                        timeout=LOOKUP_TIMEOUT,
                    )
            except Conflict:
                continue  # another replica wrote it first: use theirs
            self.rotations += 1
            logger.info(
                "webhook certificate %s in Secret %s/%s",
                "issued" if current is None else "renewed",
                opts.namespace,
                opts.secret_name,
            )
            break
        else:
            raise RuntimeError("the webhook certificate Secret keeps changing under us")
        if self.serving.load_pem(bundle.cert_pem, bundle.key_pem) and self.bundle is not None:
            logger.info("webhook now serves its renewed certificate")
        self.bundle = bundle
        await self.publish_ca_bundle(bundle.ca_pem)
        return bundle

    async def publish_ca_bundle(self, ca_pem: bytes) -> bool:
        """Write the CA bundle into every webhook of the ValidatingWebhookConfiguration (if
        it exists and differs). True when it was patched."""
        path = f"{WEBHOOK_CONFIG_API}/{self.options.webhook_config}"
        config = await self.api.get_object(path, timeout=LOOKUP_TIMEOUT)
        if not isinstance(config, Mapping):
            logger.debug("no ValidatingWebhookConfiguration %s yet", self.options.webhook_config)
            return False
        wanted = base64.b64encode(ca_pem).decode()
        ops: list[dict[str, Any]] = []
        webhooks = config.get("webhooks")
        for index, hook in enumerate(webhooks if isinstance(webhooks, list) else []):
            if not isinstance(hook, Mapping):
                continue
            client = hook.get("clientConfig")
            if isinstance(client, Mapping) and client.get("caBundle") == wanted:
                continue
            ops.append({"op": "test", "path": f"/webhooks/{index}/name", "value": hook.get("name")})
            if not isinstance(client, Mapping):
                ops.append(
                    {
                        "op": "add",
                        "path": f"/webhooks/{index}/clientConfig",
                        "value": {"caBundle": wanted},
                    }
                )
            else:
                ops.append(
                    {
                        "op": "add",
                        "path": f"/webhooks/{index}/clientConfig/caBundle",
                        "value": wanted,
                    }
                )
        if not ops:
            return False
        await self.api.patch_object(
            path, ops, content_type="application/json-patch+json", timeout=LOOKUP_TIMEOUT
        )
        self.ca_bundle_patches += 1
        logger.info(
            "CA bundle written into ValidatingWebhookConfiguration %s", self.options.webhook_config
        )
        return True

    async def run(self) -> None:
        """Re-check now and then: renew before expiry, pick up another replica's renewal, and
        put the CA bundle back if a deployment tool reset it."""
        while True:
            await asyncio.sleep(self.options.check_interval)
            try:
                await self.ensure()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "webhook certificate check failed (%s); trying again in %gs",
                    describe(exc),
                    self.options.check_interval,
                )


# --- the server --------------------------------------------------------------------------------------


class WebhookServer:
    """The HTTPS server and the task keeping its certificate current."""

    def __init__(
        self,
        admission: Admission,
        *,
        port: int,
        host: str = "0.0.0.0",
        cert_dir: str = "",
        self_signed: SelfSignedOptions | None = None,
        api: KubeApi | None = None,
        poll_interval: float = 5.0,
    ) -> None:
        if not cert_dir and (self_signed is None or api is None):
            raise ValueError("either a certificate folder or self-signed options and an API")
        self.admission = admission
        self.port = port
        self.host = host
        self.serving = ServingContext()
        self.directory = (
            DirectoryCertificates(cert_dir, self.serving, poll_interval=poll_interval)
            if cert_dir
            else None
        )
        self.self_signed = (
            SelfSignedCertificates(api, self.serving, self_signed)
            if not cert_dir and self_signed is not None and api is not None
            else None
        )
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.directory is not None:
            self.directory.load()
            keeper = self.directory.run()
        else:
            assert self.self_signed is not None
            await self.self_signed.ensure()
            keeper = self.self_signed.run()
        self._runner = web.AppRunner(build_app(self.admission), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, host=self.host, port=self.port, ssl_context=self.serving.context
        )
        await site.start()
        self._task = asyncio.create_task(keeper, name="whc-webhook-certificates")
        logger.info("admission webhook listening on port %d (HTTPS, %s)", self.port, WEBHOOK_PATH)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
