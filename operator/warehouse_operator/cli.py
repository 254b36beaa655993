"""``warehouse-operator run | check | crd | test``."""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

# Only light parts of the standard library load with this module: `run` takes SIGTERM over
# before the rest (about a second of imports) loads; see StopSignals.
if TYPE_CHECKING:
    import asyncio

EXIT_CONNECTED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    from warehouse_operator import settings as settings_mod
    from warehouse_operator.ondemand import command as ondemand
    from warehouse_operator.probe import DEFAULT_DENIED

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
    words = list(sys.argv[1:] if argv is None else argv)
    stop = StopSignals() if words[:1] == ["run"] else None
    if stop is not None:
        stop.catch()
    try:
        return _main(words, stop)
    finally:
        if stop is not None and stop.loop is None:
            stop.release()  # `run` never started (a usage error): signals act as before


def _main(argv: Sequence[str], stop: StopSignals | None) -> int:
    from warehouse_operator import settings as settings_mod

    args = _parser().parse_args(argv)
    if args.command == "run":
        assert stop is not None
        try:
            return _run(args, stop)
        except settings_mod.UsageError as exc:
            print(exc.message, file=sys.stderr)
            return EXIT_USAGE
    if args.command == "check":
        try:
            import asyncio

            return asyncio.run(_check(args))
        except UsageError as exc:
            print(f"warehouse-operator check: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.command == "crd":
        from warehouse_operator.crd import crd_text

        sys.stdout.write(crd_text())
        return 0
    if args.command == "test":
        from warehouse_operator.ondemand import command as ondemand

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
    import yaml

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


STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


class StopSignals:
    """SIGTERM or SIGINT, whenever it comes, asks the operator to stop, and it exits 0.

    No handler is installed: the signals are blocked in every thread (threads inherit the
    mask of the thread that starts them, and this runs before any does) and one thread takes
    them with ``sigwait``. So no moment is left where the default action could kill the
    process: not while modules load, not while kopf swaps its handlers in, not after the event
    loop has closed. Before the loop runs, a signal ends the process at once (nothing has
    started); while it runs, a signal sets its stop event (kopf's ``stop_flag``).
    """

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._lock = threading.Lock()
        self._taker: threading.Thread | None = None
        self._released = False

    def catch(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        self._taker = threading.Thread(target=self._take, name="stop-signals", daemon=True)
        self._taker.start()

    def release(self) -> None:
        """Signals act as before again (for a `run` that never started: a usage error)."""
        with self._lock:
            self._released = True
        if self._taker is not None and self._taker.ident is not None:
            signal.pthread_kill(self._taker.ident, signal.SIGTERM)  # wakes it up to end
            self._taker.join(timeout=1.0)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def attach(self, event: asyncio.Event) -> None:
        """From now on a signal sets ``event`` (in the running loop); before, it ends the
        process at once (exit 0)."""
        import asyncio

        with self._lock:
            self.loop, self._event = asyncio.get_running_loop(), event

    def _take(self) -> None:
        while True:
            received = signal.Signals(signal.sigwait(STOP_SIGNALS))
            with self._lock:
                if self._released:
                    return
                if self.loop is None:
                    # nothing has started yet (modules are loading): nothing to clean up
                    sys.stdout.flush()
                    os._exit(0)
                first = self.received is None
                self.received = received
                loop, event = self.loop, self._event
            if first:
                logging.getLogger("warehouse_operator").info("%s received: stopping", received.name)
            if loop is not None and event is not None:
                with contextlib.suppress(RuntimeError):  # the loop has closed: we are exiting
                    loop.call_soon_threadsafe(event.set)


def _run(args: argparse.Namespace, stop: StopSignals) -> int:
    from warehouse_operator import settings as settings_mod

    conf = settings_mod.from_args(args)  # bad input fails before anything is imported
    if not _kubeconfig_needs_client_library(os.environ):
        sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]
    from warehouse_operator.handlers import run_operator

    configure_logging(conf.log_format, conf.log_level)

    import asyncio

    async def operate() -> None:
        stop_flag = asyncio.Event()
        stop.attach(stop_flag)
        await run_operator(conf, stop_flag=stop_flag)

    asyncio.run(operate())
    return 0


# --- check -------------------------------------------------------------------------------------


def _documents(path: str) -> list[Mapping[str, Any]]:
    import yaml

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
    import yaml

    from warehouse_operator.models import GROUP, KIND, TEST_REQUESTED_ANNOTATION
    from warehouse_operator.probe import EgressPolicy, run_test
    from warehouse_operator.status import compute_status

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
