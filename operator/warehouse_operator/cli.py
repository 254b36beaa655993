"""``warehouse-operator run | check | crd | test``."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import yaml

from warehouse_operator import settings as settings_mod
from warehouse_operator.models import GROUP, KIND, TEST_REQUESTED_ANNOTATION
from warehouse_operator.ondemand import command as ondemand
from warehouse_operator.probe import DEFAULT_DENIED, EgressPolicy, run_test
from warehouse_operator.status import compute_status

EXIT_CONNECTED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="warehouse-operator",
        description="Keeps data-warehouse connections honest: tests WarehouseConnections and reports in status.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,check,crd,test}")
    run = sub.add_parser(
        "run",
        help="run the operator against the current kubeconfig (or in-cluster)",
        description="Runs the operator. Each setting is a flag or an environment variable; "
        "flags win.",
        formatter_class=settings_mod.HelpFormatter,
    )
    settings_mod.add_arguments(run)
    check = sub.add_parser(
        "check",
        help="test a WarehouseConnection from a manifest file, no cluster needed",
        description="Reads a WarehouseConnection and its Secret from a manifest (multi-document YAML "
        "or a List), runs the test the operator would run, and prints the status it would write. "
        "Exit code: 0 Connected, 1 Failed, 2 usage error.",
    )
    check.add_argument(
        "-f", "--filename", required=True, help="manifest file, or - for standard input"
    )
    check.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    check.add_argument(
        "--egress-allowed-cidrs", default="", help="comma-separated CIDRs tests may connect to"
    )
    check.add_argument(
        "--egress-denied-cidrs",
        default=",".join(DEFAULT_DENIED),
        help="comma-separated CIDRs never connected to",
    )
    sub.add_parser("crd", help="print the CustomResourceDefinition")
    ondemand.add_test_arguments(
        sub.add_parser("test", help="ask the running operator for a test now and wait for it")
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        try:
            return _run(args)
        except settings_mod.UsageError as exc:
            print(exc.message, file=sys.stderr)
            return EXIT_USAGE
    if args.command == "check":
        try:
            return asyncio.run(_check(args))
        except UsageError as exc:
            print(f"warehouse-operator check: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.command == "crd":
        from warehouse_operator.crd import crd_text

        sys.stdout.write(crd_text())
        return 0
    if args.command == "test":
        return ondemand.execute(args, "warehouse-operator test")
    return EXIT_USAGE


# --- run ---------------------------------------------------------------------------------------


def _kubeconfig_needs_client_library(environ: Mapping[str, str]) -> bool:
    """Whether the current kubeconfig user authenticates through an exec or auth-provider plugin.

    Only the official client library runs those plugins; everything else (tokens, client
    certificates, in-cluster service accounts) kopf's own login handles. kopf imports the
    client library whenever it is installed, which costs about 70 MB of memory and 3 s of
    start-up, so the operator keeps it out unless the kubeconfig needs it.
    """
    paths = [p for p in environ.get("KUBECONFIG", "").split(":") if p] or [
        os.path.expanduser("~/.kube/config")
    ]
    for path in paths:
        try:
            with open(path, encoding="utf-8") as handle:
                config = yaml.safe_load(handle)
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(config, Mapping):
            continue
        users = config.get("users") or []
        for entry in users if isinstance(users, list) else []:
            user = entry.get("user") if isinstance(entry, Mapping) else None
            if isinstance(user, Mapping) and (user.get("exec") or user.get("auth-provider")):
                return True
    return False


# kopf's own text format cuts logger names at 20 characters ("warehouse_operator.s")
TEXT_LOG_FORMAT = "[%(asctime)s] %(name)s [%(levelname)-8s] %(message)s"


def configure_logging(log_format: str, log_level: str) -> None:
    """kopf's handler on the root logger, in JSON or in text with whole logger names."""
    import kopf

    level = logging.getLevelNamesMapping()[log_level]
    json_logs = log_format == "json"
    root = logging.getLogger()
    before = set(root.handlers)
    kopf.configure(
        log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.FULL,
        verbose=level <= logging.DEBUG,
    )
    if not json_logs:
        for handler in root.handlers:
            if handler not in before:
                handler.setFormatter(logging.Formatter(TEXT_LOG_FORMAT))
    root.setLevel(level)
    # kopf reports every handled watch event at INFO: thousands of lines a minute at scale
    for noisy in ("kopf.objects", "snowflake.connector", "urllib3", "google", "botocore"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _run(args: argparse.Namespace) -> int:
    conf = settings_mod.from_args(args)  # bad input fails before anything is imported
    if not _kubeconfig_needs_client_library(os.environ):
        sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]
    from warehouse_operator.handlers import run_operator

    configure_logging(conf.log_format, conf.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_operator(conf))
    return 0


# --- check -------------------------------------------------------------------------------------


def _documents(path: str) -> list[Mapping[str, Any]]:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{path} is not valid YAML{where}") from None
    return list(_flatten(docs))


def _flatten(docs: Sequence[Any]) -> Iterator[Mapping[str, Any]]:
    for doc in docs:
        if not isinstance(doc, Mapping):
            continue
        if str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
            yield from _flatten(doc["items"])
        else:
            yield doc


def _namespace(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata")
    ns = meta.get("namespace") if isinstance(meta, Mapping) else None
    return ns if isinstance(ns, str) and ns else "default"


def _name(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return name if isinstance(name, str) else ""


def _secret_data(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` as the API server would store it: stringData merged in, base64-encoded."""
    data = dict(doc.get("data") or {}) if isinstance(doc.get("data"), Mapping) else {}
    string_data = doc.get("stringData")
    if isinstance(string_data, Mapping):
        for key, value in string_data.items():
            data[str(key)] = base64.b64encode(str(value).encode()).decode()
    return data


async def _check(args: argparse.Namespace) -> int:
    docs = _documents(args.filename)
    connections = [
        d
        for d in docs
        if d.get("kind") == KIND and str(d.get("apiVersion", "")).startswith(f"{GROUP}/")
    ]
    if not connections:
        raise UsageError(f"no {KIND} ({GROUP}) found in {args.filename}")
    secrets = {
        (_namespace(d), _name(d)): _secret_data(d) for d in docs if d.get("kind") == "Secret"
    }
    try:
        policy = EgressPolicy.from_cidrs(
            args.egress_allowed_cidrs.split(","), args.egress_denied_cidrs.split(",")
        )
    except ValueError as exc:
        raise UsageError(f"invalid CIDR: {exc}") from None

    outputs: list[dict[str, Any]] = []
    all_ok = True
    for conn in connections:
        spec = conn.get("spec")
        ref = spec.get("credentialsSecretRef") if isinstance(spec, Mapping) else None
        secret_name = ref.get("name") if isinstance(ref, Mapping) else None
        secret = (
            secrets.get((_namespace(conn), secret_name)) if isinstance(secret_name, str) else None
        )
        result = await run_test(spec, secret, policy=policy)
        meta = conn.get("metadata") if isinstance(conn.get("metadata"), Mapping) else {}
        annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
        request = (
            annotations.get(TEST_REQUESTED_ANNOTATION) if isinstance(annotations, Mapping) else None
        )
        generation = meta.get("generation") if isinstance(meta, Mapping) else None
        status, _ = compute_status(
            None,
            result,
            generation=generation if isinstance(generation, int) else None,
            now=datetime.now(UTC),
            test_request=request if isinstance(request, str) else None,
        )
        all_ok = all_ok and result.ok
        outputs.append(
            {
                "apiVersion": conn.get("apiVersion"),
                "kind": KIND,
                "metadata": {"name": _name(conn), "namespace": _namespace(conn)},
                "status": status,
            }
        )
    document: Any = (
        outputs[0] if len(outputs) == 1 else {"apiVersion": "v1", "kind": "List", "items": outputs}
    )
    if args.output == "json":
        print(json.dumps(document, indent=2))
    else:
        print(yaml.safe_dump(document, sort_keys=False), end="")
    return EXIT_CONNECTED if all_ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
