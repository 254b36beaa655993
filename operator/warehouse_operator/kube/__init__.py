"""The operator's own Kubernetes API access, outside kopf's watches.

``port.KubeApi`` is what the rest of the operator depends on; ``client.KubeClient`` implements it
over HTTP; ``errors`` holds the typed errors, ``paths`` every API path, ``watch`` the
metadata-only Secret watch,
``incluster`` the in-cluster connection info (service account, KUBERNETES_SERVICE_*).
"""

from warehouse_operator.kube.client import KubeClient
from warehouse_operator.kube.errors import (
    ApiError,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    Unauthorized,
    describe,
)
from warehouse_operator.kube.incluster import (
    InClusterConfig,
    InClusterError,
    in_cluster_config,
    service_account_dir,
)
from warehouse_operator.kube.paths import (
    connection_path,
    is_dns_subdomain,
    object_path,
    pod_namespace,
)
from warehouse_operator.kube.port import KubeApi
from warehouse_operator.kube.watch import SecretMetadataWatch

__all__ = [
    "ApiError",
    "Conflict",
    "Forbidden",
    "Gone",
    "InClusterConfig",
    "InClusterError",
    "Invalid",
    "KubeApi",
    "KubeClient",
    "NotFound",
    "SecretMetadataWatch",
    "Unauthorized",
    "connection_path",
    "describe",
    "in_cluster_config",
    "is_dns_subdomain",
    "object_path",
    "pod_namespace",
    "service_account_dir",
]
