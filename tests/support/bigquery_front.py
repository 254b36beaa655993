"""A strict front before the BigQuery emulator: the checks Google makes and the emulator does not.

The emulator accepts any bearer token and any project. In front of it, this proxy:

- answers 401 (``authError``) unless the bearer token is one the local token endpoint issued
  and has not expired, and 403 when the token's scopes do not cover BigQuery;
- answers 404 ``Not found: Project p`` for a project that does not exist;
- enforces per-identity grants like IAM would: 403 ``accessDenied`` for running jobs in a
  project the identity may not use, or reading a dataset it was not granted;
- passes everything else through, so a missing dataset gets the emulator's own 404.

Error bodies have Google's JSON shape, which google-api-core turns into its exception classes.
"""

from __future__ import annotations

import http.client
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from tests.support.bigquery_token import TokenEndpoint
from tests.support.servers import BackgroundHTTPServer, QuietHandler

BIGQUERY_SCOPES = frozenset(
    {
        "https://www.googleapis.com/auth/bigquery",
        "https://www.googleapis.com/auth/cloud-platform",
    }
)
READ_ONLY_SCOPES = frozenset(
    {
        "https://www.googleapis.com/auth/bigquery.readonly",
        "https://www.googleapis.com/auth/cloud-platform.read-only",
    }
)
_PATH = re.compile(r"^/bigquery/v2/projects/(?P<project>[^/]+)(?P<rest>/.*)?$")
_DATASET = re.compile(r"^/datasets/(?P<dataset>[^/]+)")
_FORWARDED_REQUEST_HEADERS = ("Content-Type", "Accept", "User-Agent", "X-Goog-Api-Client")
_FORWARDED_RESPONSE_HEADERS = ("Content-Type", "Location", "Range")


@dataclass(frozen=True)
class Grant:
    """What one identity may do in one project."""

    run_jobs: bool = True
    datasets: frozenset[str] | None = None  # None: every dataset in the project


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    email: str | None
    status: int


class StrictFront(BackgroundHTTPServer):
    def __init__(self, upstream: str, tokens: TokenEndpoint) -> None:
        super().__init__(_FrontHandler)
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.tokens = tokens
        self._lock = threading.Lock()
        self._projects: set[str] = set()
        self._grants: dict[tuple[str, str], Grant] = {}
        self.seen: list[SeenRequest] = []

    def add_project(self, project: str) -> None:
        with self._lock:
            self._projects.add(project)

    def grant(
        self,
        email: str,
        project: str,
        *,
        run_jobs: bool = True,
        datasets: Iterable[str] | None = None,
    ) -> None:
        with self._lock:
            self._grants[(email, project)] = Grant(
                run_jobs=run_jobs, datasets=None if datasets is None else frozenset(datasets)
            )

    def requests_by(self, email: str) -> list[SeenRequest]:
        with self._lock:
            return [r for r in self.seen if r.email == email]

    def record(self, seen: SeenRequest) -> None:
        with self._lock:
            self.seen.append(seen)

    def decide(
        self, method: str, path: str, authorization: str | None
    ) -> tuple[str | None, tuple[int, str, str, str] | None]:
        """(identity, refusal) where refusal is (HTTP status, reason, message, status text)."""
        token = ""
        if authorization and authorization.lower().startswith("bearer "):
            token = authorization[7:].strip()
        issued = self.tokens.lookup(token) if token else None
        if issued is None:
            return None, (
                401,
                "authError",
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
                "UNAUTHENTICATED",
            )
        email = issued.email
        allowed_scopes = BIGQUERY_SCOPES | (READ_ONLY_SCOPES if method == "GET" else frozenset())
        if not issued.scopes & allowed_scopes:
            return email, (
                403,
                "insufficientPermissions",
                "Request had insufficient authentication scopes.",
                "PERMISSION_DENIED",
            )
        match = _PATH.match(path.split("?", 1)[0])
        if match is None:
            return email, None
        project, rest = match["project"], match["rest"] or ""
        with self._lock:
            known = project in self._projects
            grant = self._grants.get((email, project))
        if not known:
            return email, (404, "notFound", f"Not found: Project {project}", "NOT_FOUND")
        dataset = _DATASET.match(rest)
        if dataset is not None:
            name = dataset["dataset"]
            if grant is None or (grant.datasets is not None and name not in grant.datasets):
                return email, (
                    403,
                    "accessDenied",
                    f"Access Denied: Dataset {project}:{name}: Permission bigquery.datasets.get "
                    f"denied on dataset {project}:{name} (or it may not exist).",
                    "PERMISSION_DENIED",
                )
            return email, None
        if grant is None or (rest.startswith(("/queries", "/jobs")) and not grant.run_jobs):
            return email, (
                403,
                "accessDenied",
                f"Access Denied: Project {project}: User does not have bigquery.jobs.create "
                f"permission in project {project}.",
                "PERMISSION_DENIED",
            )
        return email, None


class _FrontHandler(QuietHandler):
    def _handle(self) -> None:
        front: StrictFront = self.server.owner  # type: ignore[attr-defined]
        body = self.read_body()
        email, refusal = front.decide(self.command, self.path, self.headers.get("Authorization"))
        if refusal is not None:
            status, reason, message, status_text = refusal
            headers = {}
            if status == 401:
                headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/"'
            # recorded before answering: a test may look as soon as the client has its answer
            front.record(SeenRequest(self.command, self.path, email, status))
            self.send_json(
                status,
                {
                    "error": {
                        "code": status,
                        "message": message,
                        "errors": [{"message": message, "domain": "global", "reason": reason}],
                        "status": status_text,
                    }
                },
                headers,
            )
            return
        status, headers, payload = self._forward(front, body)
        front.record(SeenRequest(self.command, self.path, email, status))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _forward(self, front: StrictFront, body: bytes) -> tuple[int, dict[str, str], bytes]:
        upstream = http.client.HTTPConnection(front.upstream_host, front.upstream_port, timeout=30)
        try:
            headers = {
                name: value
                for name in _FORWARDED_REQUEST_HEADERS
                if (value := self.headers.get(name)) is not None
            }
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
        finally:
            upstream.close()
        kept = {
            name: value
            for name in _FORWARDED_RESPONSE_HEADERS
            if (value := response.getheader(name)) is not None
        }
        return response.status, kept, payload

    do_GET = _handle
    do_POST = _handle
    do_PUT = _handle
    do_PATCH = _handle
    do_DELETE = _handle
