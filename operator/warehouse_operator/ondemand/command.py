"""``warehouse-operator test`` and the kubectl plugin ``kubectl whc test | status``.

``test`` asks the running operator for a test the way the annotation does: it sets
``warehouse-operator.io/test-requested-at`` to a fresh value, then watches the object until
its ``status.lastHandledTestRequest`` is that value, the sign that the operator ran exactly
that test and wrote its result. Many connections (``--all``, ``-l``) are all asked first and
then waited on together. The client library is imported only when a command runs, so that
``warehouse-operator run`` keeps it out.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from warehouse_operator.models import TEST_REQUESTED_ANNOTATION, parse_duration
from warehouse_operator.ondemand import output
from warehouse_operator.ondemand.output import EXIT_USAGE, Outcome

if TYPE_CHECKING:
    from warehouse_operator.ondemand.cluster import Cluster

DEFAULT_TIMEOUT = "60s"
RELIST_PAUSE = 0.5  # between a watch the server ended and the next list

Key = tuple[str, str]

TEST_DESCRIPTION = (
    "Asks the running operator for a test now and waits for exactly that test: sets the "
    f"annotation {TEST_REQUESTED_ANNOTATION} to a fresh timestamp (what `kubectl annotate` "
    "would do) and watches until status.lastHandledTestRequest has that value. Prints phase, "
    "reason, message, latency and the checks; with --all or -l a table. Exit code: 0 Connected "
    "(all of them), 1 Failed, 2 usage error, the API refused or could not be reached, or no "
    "operator answered within --timeout."
)
STATUS_DESCRIPTION = (
    "Lists WarehouseConnections with their status, reason and the whole message "
    "(`kubectl get whc` shows reason and message only with -o wide, and cuts them)."
)


class UsageError(Exception):
    pass


# --- arguments ---------------------------------------------------------------------------------


def _add_login_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig",
        help="kubeconfig file (default: KUBECONFIG, else ~/.kube/config, else in-cluster)",
    )
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")


def _add_scope_arguments(parser: argparse.ArgumentParser, all_namespaces: str) -> None:
    parser.add_argument(
        "-n", "--namespace", help="namespace (default: the kubeconfig context's namespace)"
    )
    parser.add_argument("-A", "--all-namespaces", action="store_true", help=all_namespaces)
    parser.add_argument(
        "-l", "--selector", help="label selector, e.g. team=orders (as kubectl's -l)"
    )


def add_test_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = TEST_DESCRIPTION
    parser.add_argument("name", nargs="?", metavar="NAME", help="the WarehouseConnection")
    _add_scope_arguments(parser, "all namespaces (with --all or -l)")
    parser.add_argument(
        "--all", action="store_true", help="every WarehouseConnection in the namespace (or -A)"
    )
    parser.add_argument(
        "--timeout",
        default=DEFAULT_TIMEOUT,
        help=f"how long to wait for the operator's answer, e.g. 30s, 2m (default {DEFAULT_TIMEOUT})",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("yaml", "json"),
        help="print the objects' status as YAML or JSON instead of text",
    )
    _add_login_arguments(parser)
    parser.set_defaults(ondemand=_test, check=check_test_arguments)


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = STATUS_DESCRIPTION
    _add_scope_arguments(parser, "all namespaces")
    _add_login_arguments(parser)
    parser.set_defaults(ondemand=_status, check=check_scope_arguments)


def parse_timeout(text: str) -> float:
    """``60s``, ``2m``, or a bare number of seconds; more than zero."""
    try:
        seconds = float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"--timeout: {exc}") from None
    if seconds <= 0:
        raise UsageError("--timeout must be more than 0s")
    return seconds


def check_test_arguments(args: argparse.Namespace) -> float:
    """The timeout in seconds; ``UsageError`` for a combination that means nothing."""
    many = args.all or args.selector is not None
    if args.name and many:
        raise UsageError("give a NAME or --all / -l SELECTOR, not both")
    if not args.name and not many:
        raise UsageError("give the NAME of a WarehouseConnection, or --all, or -l SELECTOR")
    check_scope_arguments(args)
    if args.all_namespaces and args.name:
        raise UsageError("-A goes with --all or -l; a NAME is in one namespace (-n)")
    return parse_timeout(args.timeout)


def check_scope_arguments(args: argparse.Namespace) -> float:
    if args.all_namespaces and args.namespace:
        raise UsageError("give -n NAMESPACE or -A, not both")
    return 0.0


def request_value(now: datetime | None = None) -> str:
    """A fresh value for the annotation: RFC 3339 in UTC with microseconds, so two requests
    made within one second still differ."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def handled(obj: Mapping[str, Any], value: str) -> bool:
    status = obj.get("status")
    return isinstance(status, Mapping) and status.get("lastHandledTestRequest") == value


def suspended(obj: Mapping[str, Any]) -> bool:
    spec = obj.get("spec")
    return isinstance(spec, Mapping) and spec.get("suspend") is True


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


# --- entry points ------------------------------------------------------------------------------


def execute(args: argparse.Namespace, prog: str) -> int:
    """Runs the command ``args`` was parsed for; messages for a person go to stderr."""
    from warehouse_operator.ondemand.cluster import CommandError, connect

    try:
        timeout: float = args.check(args)  # before logging in: a typo needs no cluster
        cluster = connect(args.kubeconfig, args.context)
        try:
            code: int = args.ondemand(args, cluster, timeout, prog)
            return code
        finally:
            cluster.close()
    except (UsageError, CommandError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def kubectl_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl whc",
        description="WarehouseConnections from kubectl: ask for a test now, or see every "
        "connection's status with its whole message.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{test,status}")
    add_test_arguments(sub.add_parser("test", help="ask the operator for a test and wait for it"))
    add_status_arguments(
        sub.add_parser("status", help="status, reason and the whole message of each connection")
    )
    return parser


def kubectl_main(argv: Sequence[str] | None = None) -> int:
    """``kubectl-whc``: the kubectl plugin (``kubectl whc ...``)."""
    args = kubectl_parser().parse_args(argv)
    return execute(args, f"kubectl whc {args.command}")


# --- the commands ------------------------------------------------------------------------------


def _test(args: argparse.Namespace, cluster: Cluster, timeout: float, prog: str) -> int:
    namespace = None if args.all_namespaces else (args.namespace or cluster.namespace)
    if args.name:
        assert namespace is not None
        targets = [cluster.get(namespace, args.name)]
        if suspended(targets[0]):
            raise UsageError(
                f"{namespace}/{args.name} is suspended (spec.suspend: true): no test runs for it"
            )
    else:
        listed, _ = cluster.list(namespace, args.selector)
        targets = [t for t in listed if not suspended(t)]
        for skipped in (t for t in listed if suspended(t)):
            print(f"{prog}: skipping suspended {'/'.join(key_of(skipped))}", file=sys.stderr)
        if not targets:
            where = f'namespace "{namespace}"' if namespace else "any namespace"
            matching = f" matching {args.selector}" if args.selector else ""
            raise UsageError(f"no WarehouseConnection{matching} to test in {where}")
    value = request_value()
    for target in targets:
        cluster.request_test(*key_of(target), value)
    outcomes = wait_for_answers(
        cluster, targets, value, namespace, timeout, name=args.name, selector=args.selector
    )
    answered = [o for o in outcomes if o.answered]
    if args.output:  # only results: an unanswered object's status is an older test's
        if answered:
            print(output.document(answered, args.output), end="")
    elif args.name:
        if answered:
            print(output.describe(answered[0]), end="")
    else:
        print(output.outcomes_table(outcomes), end="")
    if not all(o.answered for o in outcomes):
        print(f"{prog}: {output.no_answer_hint(outcomes, timeout)}", file=sys.stderr)
    return output.exit_code(outcomes)


def wait_for_answers(
    cluster: Cluster,
    targets: Sequence[Mapping[str, Any]],
    value: str,
    namespace: str | None,
    timeout: float,
    *,
    name: str | None = None,
    selector: str | None = None,
) -> list[Outcome]:
    """Watches until every target handled the request ``value`` or ``timeout`` passed: a list
    (where a watch starts, and what changed before it), then a watch, again when the server
    ends the watch."""
    from warehouse_operator.ondemand.cluster import CommandError

    until = time.monotonic() + timeout
    latest = {key_of(t): t for t in targets}
    pending = set(latest)

    def see(obj: Mapping[str, Any]) -> None:
        key = key_of(obj)
        if key in pending:
            latest[key] = obj
            if handled(obj, value):
                pending.discard(key)

    while pending and time.monotonic() < until:
        items, since = cluster.list(namespace, selector, name=name)
        for obj in items:
            see(obj)
        gone = pending - {key_of(i) for i in items}
        if gone:
            raise CommandError(f"{'/'.join(sorted(gone)[0])} was deleted while being tested")
        if not pending:
            break
        with contextlib.closing(
            cluster.watch(namespace, since, until, name=name, selector=selector)
        ) as events:
            for kind, obj in events:
                if kind == "DELETED" and key_of(obj) in pending:
                    raise CommandError(f"{'/'.join(key_of(obj))} was deleted while being tested")
                see(obj)
                if not pending:
                    break
        if pending:
            time.sleep(min(RELIST_PAUSE, max(0.0, until - time.monotonic())))
    return [Outcome(k[0], k[1], latest[k], answered=k not in pending) for k in latest]


def _status(args: argparse.Namespace, cluster: Cluster, timeout: float, prog: str) -> int:
    namespace = None if args.all_namespaces else (args.namespace or cluster.namespace)
    items, _ = cluster.list(namespace, args.selector)
    if not items:
        where = f'namespace "{namespace}"' if namespace else "any namespace"
        print(f"No WarehouseConnections found in {where}.", file=sys.stderr)
        return 0
    items.sort(key=key_of)
    print(output.objects_table(items), end="")
    return 0


if __name__ == "__main__":
    sys.exit(kubectl_main())
