"""WarehouseConnections through the official ``kubernetes`` client, logged in as kubectl is.

The client library is used here (not the operator's own ``kube.KubeClient``) because it reads a
kubeconfig as kubectl does: several files in ``KUBECONFIG``, ``--context``, exec and
auth-provider plugins, client certificates; and its errors carry the HTTP status. Without any
kubeconfig the in-cluster service account is used, found as the operator finds it.

Every call has a timeout; every failure becomes a ``CommandError`` whose message names what
went wrong without repeating a credential.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError
from urllib3.exceptions import TimeoutError as urllib3_timeout

from warehouse_operator.kube.incluster import (
    InClusterError,
    in_cluster_config,
    service_account_dir,
)
from warehouse_operator.models import GROUP, PLURAL, TEST_REQUESTED_ANNOTATION, VERSION

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 15.0
# urllib3 retries a failed connect 3 times by default: 20 s before a silent address is reported
CONNECT_RETRIES = 1
MERGE_PATCH = "application/merge-patch+json"
KUBECTL_VERBS = "get, list, watch and patch"


class CommandError(Exception):
    """Why the command cannot go on; the message is for a person (exit code 2)."""


@dataclass
class Cluster:
    api: Any  # kubernetes.client.ApiClient
    namespace: str  # the context's namespace (kubectl's default for -n)

    @property
    def server(self) -> str:
        return str(self.api.configuration.host)

    @property
    def custom(self) -> Any:
        return client.CustomObjectsApi(self.api)

    def close(self) -> None:
        self.api.close()

    # --- the calls ----------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        with self._errors(namespace, name):
            found = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _request_timeout=_timeouts()
            )
        return dict(found)

    def list(
        self, namespace: str | None, selector: str | None = None, *, name: str | None = None
    ) -> tuple[list[Any], str]:
        """The connections in ``namespace`` (all namespaces: None), only ``name`` if given, and
        the list's resourceVersion, where a watch starts."""
        options = _selectors(name, selector)
        options["_request_timeout"] = _timeouts()
        with self._errors(namespace):
            if namespace is None:
                found = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **options)
            else:
                found = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, **options
                )
        items = [i for i in found.get("items") or [] if isinstance(i, Mapping)]
        return items, str((found.get("metadata") or {}).get("resourceVersion") or "")

    def request_test(self, namespace: str, name: str, value: str) -> None:
        """What ``kubectl annotate whc NAME warehouse-operator.io/test-requested-at=VALUE
        --overwrite`` does."""
        patch = {"metadata": {"annotations": {TEST_REQUESTED_ANNOTATION: value}}}
        with self._errors(namespace, name):
            self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                patch,
                _content_type=MERGE_PATCH,
                _request_timeout=_timeouts(),
            )

    def watch(
        self,
        namespace: str | None,
        since: str,
        until: float,
        *,
        name: str | None = None,
        selector: str | None = None,
    ) -> Generator[tuple[str, Mapping[str, Any]], None, None]:
        """(event type, object) from ``since`` until the monotonic time ``until``; ends early
        when the server ends the watch (the caller lists again) or the version is too old."""
        remaining = until - time.monotonic()
        if remaining <= 0:
            return
        options: dict[str, Any] = {
            "resource_version": since,
            "timeout_seconds": max(1, int(remaining + 0.999)),
            # a read timeout bounds a silent stream; the server ends it at timeout_seconds
            "_request_timeout": (CONNECT_TIMEOUT, remaining + READ_TIMEOUT),
            "allow_watch_bookmarks": False,
        }
        options.update(_selectors(name, selector))
        args: tuple[Any, ...]
        func: Callable[..., Any]
        if namespace is None:
            func, args = self.custom.list_cluster_custom_object, (GROUP, VERSION, PLURAL)
        else:
            func = self.custom.list_namespaced_custom_object
            args = (GROUP, VERSION, namespace, PLURAL)
        stream = watch.Watch()
        try:
            with self._errors(namespace, name):
                for event in stream.stream(func, *args, **options):
                    obj = event.get("object")
                    if isinstance(obj, Mapping):
                        yield str(event.get("type")), obj
                    if time.monotonic() >= until:
                        return
        except CommandError as exc:
            if isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 410:
                return  # expired: the caller lists again
            raise
        finally:
            stream.stop()

    # --- errors -------------------------------------------------------------------------------

    def _errors(self, namespace: str | None, name: str | None = None) -> _Errors:
        return _Errors(self, namespace, name)


class _Errors:
    """Turns the client's exceptions into ``CommandError`` with a message for a person."""

    def __init__(self, cluster: Cluster, namespace: str | None, name: str | None) -> None:
        self.cluster, self.namespace, self.name = cluster, namespace, name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or isinstance(exc, CommandError):
            return
        if isinstance(exc, ApiException):
            raise CommandError(self._api_message(exc)) from exc
        if isinstance(exc, HTTPError | OSError):
            raise CommandError(
                f"cannot reach the Kubernetes API at {self.cluster.server}: {_transport_reason(exc)}"
            ) from exc

    def _api_message(self, exc: ApiException) -> str:
        where = f'in namespace "{self.namespace}"' if self.namespace else "in any namespace"
        detail = _server_message(exc.body)
        if exc.status == 404:
            # an unknown kind is "the server could not find the requested resource"
            if self.name and "requested resource" not in detail:
                return f'warehouseconnection "{self.name}" not found {where}'
            return (
                f"the API at {self.cluster.server} serves no WarehouseConnections "
                f"(is the CRD installed? warehouse-operator crd | kubectl apply -f -)"
            )
        if exc.status == 401:
            return (
                f"the Kubernetes API at {self.cluster.server} did not accept the credentials "
                "of the current kubeconfig user (HTTP 401): log in again or pick another --context"
            )
        if exc.status == 403:
            return (
                f"no permission {where}: {detail or 'HTTP 403'} "
                f"(the command needs {KUBECTL_VERBS} on warehouseconnections.{GROUP})"
            )
        if exc.status == 400 and detail:
            return f"the Kubernetes API refused the request: {detail}"
        return f"the Kubernetes API at {self.cluster.server} answered HTTP {exc.status}" + (
            f": {detail}" if detail else ""
        )


def _status_body(body: Any) -> Mapping[str, Any]:
    try:
        parsed = json.loads(body) if isinstance(body, str | bytes) else None
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, Mapping) else {}


def _server_message(body: Any) -> str:
    """The ``message`` of the server's Status: it names the user, verb and resource, never a
    credential."""
    return " ".join(str(_status_body(body).get("message") or "").split())[:300]


def _transport_reason(exc: BaseException) -> str:
    """What a person understands of a failed connection ("Connection refused", "timed out"):
    the socket's error, deep in urllib3's wrappers (whose NewConnectionError is a timeout)."""
    chain: list[BaseException] = []
    reason: BaseException | None = exc
    while reason is not None and len(chain) < 8:
        chain.append(reason)
        reason = getattr(reason, "reason", None) or reason.__cause__ or reason.__context__
    for link in chain:
        if isinstance(link, OSError) and link.strerror:
            return str(link.strerror)
    if any(isinstance(link, TimeoutError | urllib3_timeout) for link in chain):
        return "timed out"
    return type(exc).__name__


def _selectors(name: str | None, selector: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if name:
        options["field_selector"] = f"metadata.name={name}"
    if selector:
        options["label_selector"] = selector
    return options


def _timeouts() -> tuple[float, float]:
    return (CONNECT_TIMEOUT, READ_TIMEOUT)


# --- logging in -------------------------------------------------------------------------------


def connect(
    kubeconfig: str | None, context: str | None, environ: Mapping[str, str] | None = None
) -> Cluster:
    """The kubeconfig as kubectl reads it (``--kubeconfig``, else ``KUBECONFIG``, a list of
    files, else ``~/.kube/config``; ``--context``, else the current one), or, when no
    kubeconfig exists, the in-cluster service account."""
    environ = os.environ if environ is None else environ
    paths = kubeconfig or environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    found = any(os.path.isfile(os.path.expanduser(p)) for p in paths.split(os.pathsep) if p)
    if not found and not kubeconfig and not context:
        return _in_cluster(environ)
    if not found:
        raise CommandError(f"no kubeconfig at {paths}")
    try:
        contexts, current = config.list_kube_config_contexts(config_file=paths)
        chosen = current
        if context is not None:
            chosen = next((c for c in contexts or [] if c.get("name") == context), None)
            if chosen is None:
                raise CommandError(f'context "{context}" is not in the kubeconfig')
        configuration = client.Configuration()
        config.load_kube_config(
            config_file=paths,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    except ConfigException as exc:
        raise CommandError(f"cannot use the kubeconfig: {_first_line(exc)}") from None
    except yaml.YAMLError:  # its text quotes the file, which may hold a token
        raise CommandError(f"cannot use the kubeconfig: {paths} is not valid YAML") from None
    except OSError as exc:
        raise CommandError(f"cannot use the kubeconfig: {exc.filename}: {exc.strerror}") from None
    namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
    return _cluster(configuration, str(namespace))


def _in_cluster(environ: Mapping[str, str]) -> Cluster:
    try:
        found = in_cluster_config(environ, service_account_dir(environ))
    except InClusterError as exc:
        raise CommandError(str(exc)) from None
    if found is None:
        raise CommandError(
            "no kubeconfig (--kubeconfig, KUBECONFIG or ~/.kube/config) and not in a cluster"
        )
    configuration = client.Configuration()
    configuration.host = found.server
    configuration.api_key = {"authorization": found.token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    configuration.ssl_ca_cert = found.ca_path
    return _cluster(configuration, found.namespace or "default")


def _cluster(configuration: Any, namespace: str) -> Cluster:
    configuration.retries = CONNECT_RETRIES
    return Cluster(api=client.ApiClient(configuration), namespace=namespace)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
