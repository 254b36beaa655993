"""The validating admission webhook: delete-in-use protection and one connection per namespace.

- ``admission``: what to answer (pure decisions, and the API reads they need);
- ``ca``: the webhook's own CA and serving certificates, and their renewal (pure);
- ``certificates``: keeping the served certificate current (a mounted folder, or a Secret
  shared by the replicas) and the ValidatingWebhookConfiguration's ``caBundle`` published;
- ``server``: the HTTPS server and its lifecycle.
"""

from warehouse_operator.webhooks.admission import (
    ADMISSION_API_VERSION,
    ALLOW,
    LOOKUP_TIMEOUT,
    Admission,
    Decision,
    decide_create,
    decide_delete,
    review_response,
)
from warehouse_operator.webhooks.ca import (
    CertificateBundle,
    generate_ca,
    issue_serving_certificate,
    renew_bundle,
    service_dns_names,
)
from warehouse_operator.webhooks.certificates import (
    WEBHOOK_CONFIG_API,
    DirectoryCertificates,
    SelfSignedCertificates,
    SelfSignedOptions,
    ServingContext,
)
from warehouse_operator.webhooks.server import (
    MAX_REQUEST_BYTES,
    WEBHOOK_PATH,
    WebhookServer,
    build_app,
)

__all__ = [
    "ADMISSION_API_VERSION",
    "ALLOW",
    "LOOKUP_TIMEOUT",
    "MAX_REQUEST_BYTES",
    "WEBHOOK_CONFIG_API",
    "WEBHOOK_PATH",
    "Admission",
    "CertificateBundle",
    "Decision",
    "DirectoryCertificates",
    "SelfSignedCertificates",
    "SelfSignedOptions",
    "ServingContext",
    "WebhookServer",
    "build_app",
    "decide_create",
    "decide_delete",
    "generate_ca",
    "issue_serving_certificate",
    "renew_bundle",
    "review_response",
    "service_dns_names",
]
