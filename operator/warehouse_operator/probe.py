"""Run one connection test: spec, credentials, egress policy, timeout, classification, redaction.

This is the single place that turns "a spec and a Secret" into a ``ProbeResult``. The operator
and ``warehouse-operator check`` both call :func:`run_test`, so they run exactly the same test.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from warehouse_operator.models import (
    Check,
    CheckResult,
    ConnectionSpec,
    InvalidSpecError,
    ProbeFailure,
    ProbeResult,
    Reason,
    parse_spec,
)
from warehouse_operator.providers import REGISTRY, get_provider, network
from warehouse_operator.providers.base import Destination, Stages, driver_loaded, load_driver
from warehouse_operator.secrets import SecretData

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_DENIED: tuple[str, ...] = ("169.254.0.0/16", "fe80::/10")
REDACTED = "[REDACTED]"
MAX_MESSAGE = 500


@dataclass(frozen=True)
class EgressPolicy:
    """Which destination addresses a test may connect to.

    An address is allowed when it is inside ``allowed`` (empty means everything) and not inside
    ``denied``. Every address a host name resolves to is checked, so a name that resolves to a
    denied address (or to several, one of them denied) is refused before any packet is sent.
    """

    allowed: tuple[IPNetwork, ...] = ()
    denied: tuple[IPNetwork, ...] = field(
        default_factory=lambda: tuple(ipaddress.ip_network(c) for c in DEFAULT_DENIED)
    )

    @classmethod
    def from_cidrs(
        cls, allowed: Iterable[str] = (), denied: Iterable[str] = DEFAULT_DENIED
    ) -> EgressPolicy:
        return cls(
            allowed=tuple(
                ipaddress.ip_network(c.strip(), strict=False) for c in allowed if c.strip()
            ),
            denied=tuple(
                ipaddress.ip_network(c.strip(), strict=False) for c in denied if c.strip()
            ),
        )

    def permits(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_unspecified:
            return False  # 0.0.0.0 and :: are no destination: connecting there reaches this host
        if any(ip in net for net in self.denied if net.version == ip.version):
            return False
        if not self.allowed:
            return True
        return any(ip in net for net in self.allowed if net.version == ip.version)


async def resolve(host: str, port: int, timeout: float) -> list[str]:
    """All addresses ``host`` resolves to (an IP literal resolves to itself)."""
    bare = host.strip("[]")
    try:
        return [str(ipaddress.ip_address(bare))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(bare, port, type=socket.SOCK_STREAM), timeout=max(timeout, 0.001)
    )
    return sorted({str(info[4][0]) for info in infos})


async def check_destinations(
    destinations: Sequence[Destination], policy: EgressPolicy, timeout: float
) -> tuple[str, dict[str, list[str]]]:
    """Raise ProbeFailure unless every destination resolves and is allowed.

    Returns a summary and the checked addresses of each host, for the provider to connect to.
    """
    resolved: dict[str, list[str]] = {}
    for dest in destinations:
        where = f"the {dest.what} host {dest.host}"
        try:
            addresses = await resolve(dest.host, dest.port, timeout)
        except TimeoutError:
            raise ProbeFailure(Reason.TIMEOUT, network.resolution_timed_out(where)) from None
        except OSError:
            # getaddrinfo's errors carry no socket-level cause: a failure here is always DNS
            raise ProbeFailure(Reason.UNREACHABLE, network.unresolvable(where)) from None
        denied = [a for a in addresses if not policy.permits(a)]
        if denied:
            raise ProbeFailure(
                Reason.DESTINATION_DENIED,
                f"the {dest.what} host {dest.host} resolves to {', '.join(denied)}, "
                "which the operator's egress policy does not allow",
            )
        resolved[dest.host] = addresses
    hosts = ", ".join(f"{d.host}:{d.port}" for d in destinations)
    return (f"allowed by egress policy: {hosts}" if hosts else ""), resolved


class Redactor:
    """Removes every Secret value (and recognisable fragments of it) from text."""

    def __init__(self, values: Iterable[bytes]) -> None:
        needles: set[str] = set()
        for raw in values:
            text = raw.decode("utf-8", errors="replace")
            candidates = {text, text.strip()}
            # Multi-line values (PEM keys, JSON keys): their lines may be echoed one by one,
            # and JSON escapes newlines as a two-character sequence.
            for piece in re.split(r"\r?\n|\\n", text):
                if len(piece.strip()) >= 12:
                    candidates.add(piece.strip())
            for cand in candidates:
                if cand:
                    needles.update(_echoed_forms(cand))
        self._long = sorted((n for n in needles if len(n) >= 4), key=len, reverse=True)
        self._short = sorted((n for n in needles if 0 < len(n) < 4), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for needle in self._long:
            if needle in text:
                text = text.replace(needle, REDACTED)
        for needle in self._short:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(needle)}(?![A-Za-z0-9])", REDACTED, text)
        return text


def _echoed_forms(value: str) -> set[str]:
    """The ways a driver or server may repeat a value in an error message."""
    forms = {
        value,
        repr(value)[1:-1],  # Python string escapes
        quote(value, safe=""),  # URL encoding
        quote(value),  # URL path encoding ('/' kept)
        json.dumps(value)[1:-1],  # JSON, escaped
        json.dumps(value, ensure_ascii=False)[1:-1],
        value.replace("\\", "\\\\").replace("'", "\\'"),  # libpq conninfo quoting
        value.replace("'", "''"),  # SQL literal quoting
        " ".join(value.split()),  # whitespace collapsed, as messages are
    }
    return {f for f in forms if f}


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def warm_up(provider_name: object) -> None:
    """Start importing the driver of a provider, if it is one, in the background: called when
    a connection of that provider is first seen, so that its first test rarely waits for it."""
    if isinstance(provider_name, str) and provider_name in REGISTRY:
        load_driver(REGISTRY[provider_name])


async def run_test(
    raw_spec: Any,
    secret_data: Mapping[str, Any] | None,
    *,
    policy: EgressPolicy | None = None,
) -> ProbeResult:
    """Run exactly one test of one connection and describe the outcome.

    ``secret_data`` is the referenced Secret's ``data`` (base64 values), or None when the
    Secret does not exist. Never raises for anything a user can put in a spec or a Secret.
    """
    policy = policy or EgressPolicy()
    stages = Stages()
    started = time.monotonic()
    # every value of the Secret is redacted from everything shown, from the first message on
    # (an invalid spec may quote a field a user filled with a Secret value)
    redact = Redactor(SecretData("", secret_data).all_values() if secret_data else ())
    fingerprint: str | None = None
    try:
        spec = _spec_stage(raw_spec, stages)
        provider = get_provider(spec.provider)
        waited = time.monotonic()
        await driver_loaded(provider)  # once per process; not the backend's time
        started += time.monotonic() - waited
        secret_name = spec.credentials_secret_ref.name
        with stages.stage("credentials", "credentials are well-formed"):
            if secret_data is None:
                raise ProbeFailure(
                    Reason.SECRET_NOT_FOUND,
                    f"Secret {secret_name!r} was not found in the connection's namespace",
                )
            secret = SecretData(secret_name, secret_data, spec.credentials_secret_ref.keys)
            credentials = await _parse_credentials(
                provider, spec, secret, spec.test_timeout_seconds
            )
        # shown on failure too: that is when a person compares it with the server's record
        fingerprint = getattr(credentials, "public_key_fingerprint", None)
        remaining = spec.test_timeout_seconds - (time.monotonic() - started)
        with stages.stage("destination") as note:
            note.message, resolved = await check_destinations(
                provider.destinations(spec, credentials), policy, remaining
            )
        remaining = spec.test_timeout_seconds - (time.monotonic() - started)
        probe_started = time.monotonic()
        try:
            success = await asyncio.wait_for(
                provider.probe(
                    spec, credentials, timeout=remaining, stages=stages, resolved=resolved
                ),
                timeout=max(remaining, 0.001),
            )
        except TimeoutError:
            message = f"no answer within testTimeout ({spec.test_timeout})"
            _close_open_stage(stages, provider.stage_order(), message)
            raise ProbeFailure(Reason.TIMEOUT, message) from None
        latency_ms = round((time.monotonic() - probe_started) * 1000)
    except ProbeFailure as failure:
        return _failed(failure.reason, failure.message, stages, redact, fingerprint)
    except Exception as exc:  # the last line of defence: never raise out of a test
        detail = redact(str(exc)) or "no detail"
        message = f"unexpected {type(exc).__name__}: {detail}"
        return _failed(Reason.PROVIDER_ERROR, message, stages, redact, fingerprint)

    message = success.message or f"connected in {latency_ms} ms"
    return ProbeResult(
        reason=Reason.CONNECTED,
        message=_clip(redact(message)),
        latency_ms=latency_ms,
        server_version=redact(success.server_version) if success.server_version else None,
        checks=tuple(_redact_check(c, redact) for c in stages.checks),
        public_key_fingerprint=success.public_key_fingerprint or fingerprint,
        warehouse_state=success.warehouse_state,
    )


# Parsing credentials can cost real CPU (decrypting a private key runs the key derivation its
# owner chose; providers cap it): it runs off the event loop, on a few threads of its own,
# within the test's time.
_credential_pool = ThreadPoolExecutor(4, thread_name_prefix="whc-credentials")


async def _parse_credentials(
    provider: Any, spec: ConnectionSpec, secret: SecretData, timeout: float
) -> Any:
    loop = asyncio.get_running_loop()
    job = loop.run_in_executor(_credential_pool, provider.parse_credentials, spec, secret)
    try:
        return await asyncio.wait_for(asyncio.shield(job), timeout=max(timeout, 0.001))
    except TimeoutError:
        raise ProbeFailure(
            Reason.TIMEOUT,
            f"checking the credentials took longer than testTimeout ({spec.test_timeout})",
        ) from None


def _spec_stage(raw_spec: Any, stages: Stages) -> ConnectionSpec:
    with stages.stage("spec", "spec is valid"):
        try:
            spec = parse_spec(raw_spec)
        except InvalidSpecError as exc:
            raise ProbeFailure(Reason.INVALID_SPEC, str(exc)) from None
        try:
            get_provider(spec.provider)
        except KeyError:
            raise ProbeFailure(
                Reason.INVALID_SPEC, f"provider {spec.provider!r} is not supported"
            ) from None
    return spec


def _close_open_stage(stages: Stages, order: list[str], message: str) -> None:
    """After a timeout, mark the first stage that never finished as Failed."""
    done = stages.names()
    for name in order:
        if name not in done:
            stages.failed(name, message)
            return


def _failed(
    reason: Reason, message: str, stages: Stages, redact: Redactor, fingerprint: str | None
) -> ProbeResult:
    return ProbeResult(
        reason=reason,
        message=_clip(redact(message)),
        checks=tuple(_redact_check(c, redact) for c in stages.checks),
        public_key_fingerprint=fingerprint,
    )


def _redact_check(check: Check, redact: Redactor) -> Check:
    if check.result is CheckResult.PASSED and not check.message:
        return check
    return check.model_copy(update={"message": _clip(redact(check.message))})
