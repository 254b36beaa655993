"""Leader election with two real operator processes against the Kubernetes API emulator.

Exactly one replica tests (its metrics count tests, the other's count none; the Lease names
it); when it is killed with SIGKILL the other takes over once the Lease expires; when it stops
cleanly it releases the Lease and the other takes over within a retry period. The lease timings
are shortened through the environment (4 s lease, 3 s renew deadline, 0.5 s retry period).
"""

from __future__ import annotations

import re
import time
from typing import Any

from tests.support.kube_cluster import Kube, Namespace
from tests.support.pgserver import PostgresServer

from .conftest import OperatorFactory, RunningOperator, get_lease, postgres_connection, wait_until

LEASE = "whc-leader-test"
FAST_LEASE = {
    "WHC_LEADER_ELECTION_LEASE_DURATION": "4s",
    "WHC_LEADER_ELECTION_RENEW_DEADLINE": "3s",
    "WHC_LEADER_ELECTION_RETRY_PERIOD": "500ms",
}
TESTS = ("warehouse_connection_tests", "warehouse_connection_tests_total")
LEADER = ("warehouse_operator_is_leader", "warehouse_operator_is_leader")


def _pair(operators: OperatorFactory, ns: Namespace) -> tuple[RunningOperator, RunningOperator]:
    args = ["--leader-elect", "true", "--leader-election-namespace", ns.name]
    args += ["--leader-election-lease", LEASE]
    first = operators([ns.name], args=args, env=FAST_LEASE, name="replica-a")
    second = operators([ns.name], args=args, env=FAST_LEASE, name="replica-b")
    return first, second


def _holder(kube: Kube, ns: Namespace) -> str:
    lease = get_lease(kube, ns.name, LEASE)
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def _identity(replica: RunningOperator) -> str:
    found = re.findall(
        r"became the leader \(Lease \S+, identity (\S+)\)", replica.process.log_text()
    )
    return found[-1] if found else ""


def _connected_pair(
    kube: Kube, ns: Namespace, postgres: PostgresServer, operators: OperatorFactory
) -> tuple[RunningOperator, RunningOperator]:
    ns.create_secret("pg", {"username": postgres.user, "password": postgres.password})
    spec: dict[str, Any] = {
        **postgres_connection(postgres, "pg", interval="1s"),
        "postgres": postgres.postgres_spec(sslMode="disable"),
    }
    ns.create_connection("warehouse", spec)
    first, second = _pair(operators, ns)
    ns.wait_for("warehouse", lambda s: s.get("phase") == "Connected", timeout=30)
    wait_until(lambda: _holder(kube, ns), 15, "a Lease holder")
    leaders = [r for r in (first, second) if r.sample_total(*LEADER) == 1]
    assert len(leaders) == 1, [r.sample_total(*LEADER) for r in (first, second)]
    leader = leaders[0]
    follower = second if leader is first else first
    assert _holder(kube, ns) == _identity(leader) != ""
    return leader, follower


def test_exactly_one_replica_tests_and_a_follower_takes_over_after_sigkill(
    kube: Kube, ns: Namespace, postgres: PostgresServer, operators: OperatorFactory
) -> None:
    leader, follower = _connected_pair(kube, ns, postgres, operators)

    # a few test intervals: all tests are the leader's
    time.sleep(3)
    assert leader.sample_total(*TESTS, provider="postgres", result="success") >= 2
    assert follower.sample_total(*TESTS) == 0
    # both are ready: followers too (they serve the webhook and can take over)
    assert leader.get(leader.health_port, "/readyz") == (200, "ready (leader)\n")
    assert follower.get(follower.health_port, "/readyz") == (200, "ready (follower)\n")
    assert follower.sample_total(*LEADER) == 0

    old_holder = _holder(kube, ns)
    before = ns.status("warehouse")["lastTestedAt"]
    leader.process.kill()
    killed = time.monotonic()

    new_holder = wait_until(
        lambda: (h := _holder(kube, ns)) != old_holder and h, 20, "a new Lease holder"
    )
    took_lease = time.monotonic() - killed
    wait_until(lambda: follower.sample_total(*TESTS) > 0, 20, "the new leader testing")
    first_test = time.monotonic() - killed
    ns.wait_for("warehouse", lambda s: s.get("lastTestedAt", "") > before, timeout=10)
    print(
        f"\nfailover after SIGKILL: Lease taken after {took_lease:.2f}s, first test after {first_test:.2f}s"
    )

    assert new_holder == _identity(follower)
    assert follower.sample_total(*LEADER) == 1
    assert took_lease < 20
    lease = get_lease(kube, ns.name, LEASE)
    assert lease is not None
    assert lease["spec"]["leaseTransitions"] >= 1
    assert lease["spec"]["leaseDurationSeconds"] == 4


def test_clean_shutdown_releases_the_lease_at_once(
    kube: Kube, ns: Namespace, postgres: PostgresServer, operators: OperatorFactory
) -> None:
    leader, follower = _connected_pair(kube, ns, postgres, operators)
    old_holder = _holder(kube, ns)
    stopping = time.monotonic()
    assert leader.process.stop() == 0
    stopped = time.monotonic() - stopping
    assert "released the Lease" in leader.process.log_text()

    wait_until(lambda: (h := _holder(kube, ns)) != old_holder and h, 10, "a new Lease holder")
    took_over = time.monotonic() - stopping
    print(f"\nhand-over after a clean stop: {took_over:.2f}s (the stop itself {stopped:.2f}s)")
    # a released Lease is free at once: one retry period (0.5-0.6 s) after the stop, not a lease duration
    assert took_over - stopped < 2.0
    assert _holder(kube, ns) == _identity(follower)
