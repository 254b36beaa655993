"""What ``warehouse-operator test`` and ``kubectl whc`` print, and their exit codes (pure).

Everything printed comes from a WarehouseConnection's ``status``, which the operator keeps free
of Secret values; nothing here reads a Secret.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from warehouse_operator.models import GROUP, KIND, VERSION

EXIT_CONNECTED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # also: the API refused or could not be reached, or no operator answered

NO_ANSWER = "NoAnswer"


@dataclass(frozen=True)
class Outcome:
    """One connection after a test was asked for: its object as last seen, and whether the
    operator handled exactly that request (``answered``) before the deadline."""

    namespace: str
    name: str
    obj: Mapping[str, Any]
    answered: bool = True

    @property
    def status(self) -> Mapping[str, Any]:
        status = self.obj.get("status")
        return status if isinstance(status, Mapping) else {}

    @property
    def connected(self) -> bool:
        return self.answered and self.status.get("phase") == "Connected"


def exit_code(outcomes: Sequence[Outcome]) -> int:
    """0 when every connection is Connected, 2 when one went unanswered, else 1."""
    if not outcomes or not all(o.answered for o in outcomes):
        return EXIT_USAGE
    return EXIT_CONNECTED if all(o.connected for o in outcomes) else EXIT_FAILED


def _text(value: Any) -> str:
    """One line: a message may hold line breaks (a driver's), a table row may not."""
    return " ".join(str(value).split()) if value is not None else ""


def _latency(status: Mapping[str, Any]) -> str:
    value = status.get("latencyMs")
    return f"{value}ms" if isinstance(value, int) and status.get("phase") == "Connected" else ""


def _provider(obj: Mapping[str, Any]) -> str:
    spec = obj.get("spec")
    return _text(spec.get("provider")) if isinstance(spec, Mapping) else ""


def row(namespace: str, name: str, obj: Mapping[str, Any], *, answered: bool = True) -> list[str]:
    status = obj.get("status")
    status = status if isinstance(status, Mapping) else {}
    if not answered:
        return [namespace, name, _provider(obj), NO_ANSWER, "", "", "no operator answered"]
    return [
        namespace,
        name,
        _provider(obj),
        _text(status.get("phase")) or "Pending",
        _text(status.get("reason")),
        _latency(status),
        _text(status.get("message")),
    ]


HEADERS = ("NAMESPACE", "NAME", "PROVIDER", "STATUS", "REASON", "LATENCY", "MESSAGE")


def table(rows: Iterable[Sequence[str]], headers: Sequence[str] = HEADERS) -> str:
    """Columns padded as ``kubectl get`` pads them; the last column (the message) is never cut:
    the terminal wraps it."""
    lines = [list(headers), *(list(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers) - 1)]
    out = []
    for line in lines:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])]
        out.append("   ".join([*cells, line[-1]]).rstrip())
    return "\n".join(out) + "\n"


def outcomes_table(outcomes: Iterable[Outcome]) -> str:
    return table(row(o.namespace, o.name, o.obj, answered=o.answered) for o in outcomes)


def objects_table(objects: Iterable[Mapping[str, Any]]) -> str:
    return table(row(_meta(o, "namespace"), _meta(o, "name"), o) for o in objects)


def _meta(obj: Mapping[str, Any], key: str) -> str:
    meta = obj.get("metadata")
    return _text(meta.get(key)) if isinstance(meta, Mapping) else ""


def describe(outcome: Outcome) -> str:
    """The result of one test, for a person."""
    status = outcome.status
    lines = [f"{KIND} {outcome.namespace}/{outcome.name} ({_provider(outcome.obj) or '?'})"]
    fields = [
        ("status", _text(status.get("phase"))),
        ("reason", _text(status.get("reason"))),
        ("message", _text(status.get("message"))),
        ("latency", _latency(status)),
        ("server", _text(status.get("serverVersion"))),
        ("tested at", _text(status.get("lastTestedAt"))),
    ]
    lines += [f"  {label + ':':<11}{value}" for label, value in fields if value]
    checks = [c for c in status.get("checks") or [] if isinstance(c, Mapping)]
    if checks:
        lines.append("  checks:")
        names = max(len(_text(c.get("name"))) for c in checks)
        for check in checks:
            duration = check.get("durationMs")
            took = f"{duration}ms" if isinstance(duration, int) else ""
            cells = [
                _text(check.get("name")).ljust(names),
                _text(check.get("result")).ljust(7),
                took.rjust(7),
                _text(check.get("message")),
            ]
            lines.append(("    " + "  ".join(cells)).rstrip())
    return "\n".join(lines) + "\n"


def document(outcomes: Sequence[Outcome], output: str) -> str:
    """The objects as ``kubectl get -o yaml|json`` prints them (name, namespace and status, as
    ``warehouse-operator check`` does); a List for more than one."""
    items = [
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": o.name, "namespace": o.namespace},
            "status": dict(o.status),
        }
        for o in outcomes
    ]
    doc: Any = items[0] if len(items) == 1 else {"apiVersion": "v1", "kind": "List", "items": items}
    if output == "json":
        return json.dumps(doc, indent=2) + "\n"
    return str(yaml.safe_dump(doc, sort_keys=False))


def format_seconds(seconds: float) -> str:
    """``60s``, ``1.5s``: as the --timeout was given."""
    return f"{seconds:g}s"


def no_answer_hint(outcomes: Sequence[Outcome], timeout: float) -> str:
    """Why a test may go unanswered, naming the namespaces whose objects got no answer."""
    namespaces = sorted({o.namespace for o in outcomes if not o.answered})
    where = ", ".join(namespaces)
    noun = "namespace" if len(namespaces) == 1 else "namespaces"
    return (
        f"no operator answered within {format_seconds(timeout)}: "
        f"is it running and watching {noun} {where}?"
    )
