"""The scheduler with a recording stand-in for the Kubernetes API.

Tests run the real probe on paths that need no server (missing Secret, egress policy), so
what is exercised here is *when* tests run and what gets written, not how a database answers.
"""

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.support.encoding import b64
from tests.support.fake_kube import RecordingApi
from tests.support.servers import StallServer
from warehouse_operator.kube import KubeApi
from warehouse_operator.probe import EgressPolicy
from warehouse_operator.scheduler import Scheduler, backoff_delay

DENY_LOOPBACK = EgressPolicy.from_cidrs([], ["127.0.0.0/8"])


def body(
    name: str,
    *,
    secret: str = "db",
    interval: str | None = None,
    suspend: bool = False,
    annotations: dict[str, str] | None = None,
    status: dict[str, Any] | None = None,
    generation: int | None = 1,
    port: int = 5432,
    timeout: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "provider": "postgres",
        "credentialsSecretRef": {"name": secret},
        "postgres": {"host": "127.0.0.1", "port": port, "database": "app"},
        "suspend": suspend,
    }
    if interval:
        spec["testInterval"] = interval
    if timeout:
        spec["testTimeout"] = timeout
    meta: dict[str, Any] = {
        "namespace": "ns",
        "name": name,
        "uid": f"uid-{name}",
        "annotations": annotations or {},
    }
    if generation is not None:
        meta["generation"] = generation
    out: dict[str, Any] = {"metadata": meta, "spec": spec}
    if status is not None:
        out["status"] = status
    return out


@asynccontextmanager
async def running(api: KubeApi, *, active: bool = True, **options: Any) -> AsyncIterator[Scheduler]:
    """A Scheduler on ``api``, started (as the leader unless ``active`` is False), stopped on
    leaving."""
    s = Scheduler(api, **options)
    s.start(active=active)
    try:
        yield s
    finally:
        await s.stop()


async def settle(seconds: float = 0.15) -> None:
    await asyncio.sleep(seconds)


@pytest.fixture
async def sched() -> Any:
    api = RecordingApi()
    async with running(
        api, max_concurrent=4, default_interval=300, policy=DENY_LOOPBACK, startup_spread=0.5
    ) as s:
        yield s, api


async def test_new_connection_is_tested_once_with_one_write(sched: Any) -> None:
    s, api = sched
    s.observe(body("a"), "ADDED")
    await settle()
    assert api.reasons("a") == ["SecretNotFound"]
    assert api.told() == [("a", "Warning", "SecretNotFound")]
    assert len(api.secret_reads) == 1


async def test_new_connection_says_pending_first_and_never_after(sched: Any) -> None:
    s, api = sched
    for i in range(20):
        s.observe(body(f"n{i}"), "ADDED")
    await settle(0.5)
    assert api.pending_of()  # new connections are announced as Pending ...
    for i in range(20):
        phases = [p.status.get("phase") for p in api.results if p.name == f"n{i}"]
        # ... unless the result came first; a Pending write never lands after a result
        assert phases in (["Pending", "Failed"], ["Failed"])


async def test_known_connection_gets_no_pending_write(sched: Any) -> None:
    s, api = sched
    s.observe(
        body(
            "a",
            status={
                "phase": "Connected",
                "lastTestedAt": "2026-01-01T00:00:00Z",
                "observedGeneration": 0,
            },
        ),
        None,
    )
    await settle()
    assert api.pending_of() == []
    assert len(api.results) == 1


async def test_status_echo_does_not_retest(sched: Any) -> None:
    s, api = sched
    s.observe(body("a"), "ADDED")
    await settle()
    written = api.results[-1].status
    s.observe(body("a", status=written), "MODIFIED")
    await settle()
    assert len(api.results) == 1


async def test_secret_creation_and_change_retest_only_its_users(sched: Any) -> None:
    s, api = sched
    s.observe(body("a", secret="db"), "ADDED")
    s.observe(body("b", secret="other"), "ADDED")
    await settle()
    assert api.reasons("a") == ["SecretNotFound"]
    s.observe_secret("ns", "db", {"username": b64("app"), "password": b64("pw")})
    await settle()
    assert api.reasons("a") == ["SecretNotFound", "DestinationDenied"]
    assert api.reasons("b") == ["SecretNotFound"]
    # the same data again (a resync) is no change
    s.observe_secret("ns", "db", {"username": b64("app"), "password": b64("pw")})
    await settle()
    assert len(api.reasons("a")) == 2
    # a Secret nobody references is neither tested for nor kept
    s.observe_secret("ns", "unrelated", {"big": b64("x" * 1000)})
    await settle()
    assert not s.secrets.holds(("ns", "unrelated"))
    # deletion of the used Secret is a change
    s.observe_secret("ns", "db", None)
    await settle()
    assert api.reasons("a")[-1] == "SecretNotFound"


async def test_cached_secret_is_not_read_again(sched: Any) -> None:
    s, api = sched
    api.secrets[("ns", "db")] = {"username": b64("app"), "password": b64("pw")}
    s.observe(body("a"), "ADDED")
    await settle()
    s.observe(
        {
            **body("a"),
            "metadata": {
                **body("a")["metadata"],
                "annotations": {"warehouse-operator.io/test-requested-at": "t1"},
            },
        },
        "MODIFIED",
    )
    await settle()
    assert len(api.secret_reads) == 1
    assert len(api.results) == 2


async def test_annotation_requests_a_test_once(sched: Any) -> None:
    s, api = sched
    s.observe(body("a"), "ADDED")
    await settle()
    annotated = body(
        "a", annotations={"warehouse-operator.io/test-requested-at": "2026-01-01T00:00:00Z"}
    )
    s.observe(annotated, "MODIFIED")
    s.observe(annotated, "MODIFIED")
    await settle()
    assert len(api.results) == 2
    assert api.results[-1].status["lastHandledTestRequest"] == "2026-01-01T00:00:00Z"
    annotated["status"] = api.results[-1].status
    s.observe(annotated, "MODIFIED")
    await settle()
    assert len(api.results) == 2


async def test_spec_change_retests(sched: Any) -> None:
    s, api = sched
    s.observe(body("a"), "ADDED")
    await settle()
    s.observe(body("a", port=5433, generation=2), "MODIFIED")
    await settle()
    assert len(api.results) == 2
    assert api.results[-1].status["observedGeneration"] == 2


async def test_interval_and_backoff_and_suspend(sched: Any) -> None:
    s, api = sched
    s.observe(body("a", interval="200ms"), "ADDED")
    await settle(1.0)
    count = len(api.results)
    assert 3 <= count <= 7, count
    assert api.results[-1].status["consecutiveFailures"] == count
    # repeated identical failures post no further events
    assert api.told() == [("a", "Warning", "SecretNotFound")]
    s.observe(body("a", interval="200ms", suspend=True, generation=2), "MODIFIED")
    await settle(0.1)
    frozen = len(api.results)
    await settle(0.8)
    assert len(api.results) == frozen
    s.observe(body("a", interval="200ms", suspend=False, generation=3), "MODIFIED")
    await settle(0.3)
    assert len(api.results) > frozen


async def test_suspended_from_the_start_is_never_tested(sched: Any) -> None:
    s, api = sched
    s.observe(body("a", suspend=True), "ADDED")
    await settle(0.3)
    assert api.results == []


async def test_restart_spreads_retests_of_current_connections() -> None:
    api = RecordingApi()
    async with running(
        api, max_concurrent=50, default_interval=300, policy=DENY_LOOPBACK, startup_spread=1.0
    ) as s:
        current = {
            "lastTestedAt": "2026-01-01T00:00:00Z",
            "observedGeneration": 1,
            "phase": "Failed",
        }
        for i in range(40):
            s.observe(body(f"c{i}", status=current), None)
        await settle(0.1)
        early = len(api.results)
        await settle(1.2)
        assert early < 15, early  # not all at once
        assert len(api.results) == 40  # but all re-verified within the spread


async def test_concurrency_is_bounded_and_new_objects_go_first() -> None:
    api = RecordingApi()
    async with running(
        api, max_concurrent=3, default_interval=300, policy=DENY_LOOPBACK, startup_spread=0.0
    ) as s:
        for i in range(30):
            s.observe(body(f"c{i}"), "ADDED")
        await settle(0.5)
        assert len(api.results) == 30
        assert s.peak_running_tests <= 3


async def test_deleted_objects_are_forgotten(sched: Any) -> None:
    s, api = sched
    s.observe(body("a", interval="200ms"), "ADDED")
    await settle()
    s.observe(body("a"), "DELETED")
    n = len(api.results)
    await settle(0.5)
    assert len(api.results) == n
    assert ("ns", "a") not in s.tracked


async def test_object_gone_at_write_time_is_forgotten(sched: Any) -> None:
    s, api = sched
    api.gone.add(("ns", "a"))
    s.observe(body("a"), "ADDED")
    await settle()
    assert ("ns", "a") not in s.tracked
    assert api.told() == []


def test_backoff_is_exponential_and_capped() -> None:
    assert [backoff_delay(n, 300) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert backoff_delay(10, 60) == 60
    assert backoff_delay(1, 2) == 2


async def test_a_silent_backend_cannot_take_every_worker() -> None:
    """Tests to a host that never answers hold at most their destination's share of workers."""
    api = RecordingApi()
    api.secrets[("ns", "db")] = {"username": b64("app"), "password": b64("pw")}
    with StallServer() as silent:
        async with running(
            api,
            max_concurrent=4,
            default_interval=300,
            policy=EgressPolicy.from_cidrs([], []),
            max_per_destination=2,
        ) as s:
            for i in range(6):
                s.observe(body(f"silent{i}", port=silent.port, timeout="2s"), "ADDED")
            for i in range(6):
                s.observe(body(f"refused{i}", port=1), "ADDED")  # nothing listens on port 1
            await settle(0.8)
            fast_done = {p.name for p in api.results if p.name.startswith("refused")}
            assert fast_done == {f"refused{i}" for i in range(6)}
            assert not any(p.name.startswith("silent") for p in api.results)
            assert s.queue.gate_load(f"dest:postgres://127.0.0.1:{silent.port}") == 2
            await settle(2.0)
            timed_out = [p for p in api.results if p.name.startswith("silent")]
            assert len(timed_out) == 2
            assert {p.status["reason"] for p in timed_out} == {"Timeout"}


async def test_pause_cancels_running_tests_unwritten_and_resume_retests() -> None:
    api = RecordingApi()
    api.secrets[("ns", "db")] = {"username": b64("app"), "password": b64("pw")}
    with StallServer() as silent:
        async with running(api, max_concurrent=2, policy=EgressPolicy.from_cidrs([], [])) as s:
            s.observe(body("a", port=silent.port, timeout="1s"), "ADDED")
            await settle(0.3)
            assert s.running_tests == 1
            s.pause()  # the lease is lost mid-test
            await settle(1.2)
            assert api.results == []  # nothing written after losing the lease
            s.resume()
            await settle(1.5)
            assert api.reasons("a") == ["Timeout"]


async def test_a_follower_takes_over_the_leaders_status() -> None:
    api = RecordingApi()
    async with running(api, max_concurrent=2, policy=DENY_LOOPBACK, active=False) as s:
        s.observe(body("a"), "ADDED")
        leader_status = {
            "phase": "Failed",
            "reason": "SecretNotFound",
            "lastTestedAt": "2026-01-01T00:00:00Z",
            "consecutiveFailures": 3,
            "observedGeneration": 1,
            "lastHandledTestRequest": "r1",
        }
        s.observe(body("a", status=leader_status), "MODIFIED")
        await settle()
        assert api.results == []
        s.resume()
        await settle()
        # the new leader's first result continues the leader's story: no repeated Warning
        assert api.told() == []
        assert api.results[-1].status["consecutiveFailures"] == 4
        assert api.results[-1].status["lastHandledTestRequest"] == "r1"


async def test_secret_metadata_events_read_only_used_secrets_once_per_version(sched: Any) -> None:
    s, api = sched
    api.secrets[("ns", "db")] = {"username": b64("app"), "password": b64("pw")}
    s.observe(body("a"), "ADDED")
    await settle()
    assert len(api.secret_reads) == 1
    # a listing at start-up and events for unrelated Secrets cost nothing
    s.secrets_listed([("ns", "db", "10"), ("ns", "helm-release-1", "11")])
    s.secret_changed("MODIFIED", "ns", "helm-release-1", "12")
    await settle()
    assert len(api.secret_reads) == 2  # the used one's first version seen after its first read
    assert len(api.results) == 1  # same data: no test
    s.secret_changed("MODIFIED", "ns", "db", "10")  # a version already seen
    await settle()
    assert len(api.secret_reads) == 2
    api.secrets[("ns", "db")] = {"username": b64("app"), "password": b64("new")}
    s.secret_changed("MODIFIED", "ns", "db", "13")
    await settle()
    assert len(api.secret_reads) == 3
    assert len(api.results) == 2  # new data: one test
    s.secret_changed("DELETED", "ns", "db", "14")
    await settle()
    assert api.reasons("a")[-1] == "SecretNotFound"


async def test_secret_created_after_it_was_missing(sched: Any) -> None:
    s, api = sched
    s.observe(body("a"), "ADDED")
    await settle()
    assert api.reasons("a") == ["SecretNotFound"]
    api.secrets[("ns", "db")] = {"username": b64("app"), "password": b64("pw")}
    s.secret_changed("ADDED", "ns", "db", "5")
    await settle()
    assert api.reasons("a") == ["SecretNotFound", "DestinationDenied"]


async def test_secret_deleted_while_the_watch_was_away(sched: Any) -> None:
    s, api = sched
    api.secrets[("ns", "db")] = {"username": b64("app"), "password": b64("pw")}
    s.observe(body("a"), "ADDED")
    await settle()
    del api.secrets[("ns", "db")]
    s.secrets_listed([("ns", "other", "3")])  # a relisting without it
    await settle()
    assert api.reasons("a")[-1] == "SecretNotFound"


class StalledWritesApi(RecordingApi):
    """Status writes of the connections named in ``stalled`` wait until ``release`` is set."""

    def __init__(self, stalled: set[str]) -> None:
        super().__init__()
        self.stalled = stalled
        self.release = asyncio.Event()

    async def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any], *, version: str | None = None
    ) -> Any:
        if name in self.stalled and status.get("phase") != "Pending":
            await self.release.wait()
        return await super().patch_status(namespace, name, status, version=version)


async def test_a_slow_status_write_holds_neither_the_worker_nor_the_connection_twice() -> None:
    api = StalledWritesApi(stalled={"slow"})
    s = Scheduler(api, max_concurrent=1, default_interval=300, policy=DENY_LOOPBACK)
    s.start()
    try:
        s.observe(body("slow", interval="100ms"), "ADDED")
        await settle(0.2)
        assert s.running_tests == 0  # the test is over; only its write is waiting
        s.observe(body("next"), "ADDED")
        await settle(0.2)
        assert api.reasons("next") == ["SecretNotFound"]  # the one worker was free for it
        # a change while its write waits: tested again after the write, never alongside it
        s.observe(body("slow", interval="1h", generation=2, port=5433), "MODIFIED")
        await settle(0.2)
        assert s.queue.processing(("ns", "slow"))  # still writing its result ...
        assert s.queue.dirty(("ns", "slow"))  # ... so the new spec waits its turn
        assert s.running_tests == 0
        api.release.set()
        await settle(0.3)
        assert api.reasons("slow") == ["SecretNotFound", "SecretNotFound"]
        assert api.results[-1].status["observedGeneration"] == 2
        assert s.peak_running_tests == 1
    finally:
        api.release.set()
        await s.stop()
