"""Pure parts of leader election: timings, the Lease record, expiry and claims."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from warehouse_operator.leader import (
    LeaderTimings,
    LeaseRecord,
    claim,
    held_by_other,
    make_identity,
    micro_time,
    released,
)

NOW = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_default_timings_are_controller_runtime_s() -> None:
    timings = LeaderTimings()
    assert (timings.lease_duration, timings.renew_deadline, timings.retry_period) == (15, 10, 2)


@pytest.mark.parametrize(
    ("lease", "renew", "retry"),
    [(10, 10, 2), (15, 20, 2), (15, 2, 2), (15, 10, 0), (15, 10, -1)],
)
def test_inconsistent_timings_are_refused(lease: float, renew: float, retry: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        LeaderTimings(lease, renew, retry)


def test_identity_is_the_pod_name_and_a_random_suffix() -> None:
    first, second = make_identity("operator-7d9f-abcde"), make_identity("operator-7d9f-abcde")
    assert re.fullmatch(r"operator-7d9f-abcde_[0-9a-f]{8}", first)
    assert first != second


def test_micro_time_is_rfc3339_with_microseconds() -> None:
    assert micro_time(NOW) == "2026-05-01T12:00:00.123456Z"


def test_record_round_trips_through_a_lease() -> None:
    record = LeaseRecord(
        "pod_1", 15, "2026-05-01T12:00:00.000000Z", "2026-05-01T12:00:10.000000Z", 3
    )
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": record.to_spec()}
    assert LeaseRecord.from_lease(lease) == record
    assert lease["spec"]["holderIdentity"] == "pod_1"
    assert lease["spec"]["leaseTransitions"] == 3


def test_a_lease_without_spec_or_with_junk_is_free() -> None:
    assert LeaseRecord.from_lease({}) == LeaseRecord()
    junk = {"spec": {"holderIdentity": 5, "leaseDurationSeconds": "15", "leaseTransitions": True}}
    assert LeaseRecord.from_lease(junk) == LeaseRecord()


def test_expiry_counts_from_when_this_replica_saw_the_record_change() -> None:
    record = LeaseRecord("other", 15)
    assert held_by_other(record, "me", observed_at=100.0, now=114.9)
    assert not held_by_other(record, "me", observed_at=100.0, now=115.0)
    # our own lease, or nobody's, is never "held by another"
    assert not held_by_other(LeaseRecord("me", 15), "me", 100.0, 101.0)
    assert not held_by_other(LeaseRecord("", 15), "me", 100.0, 101.0)


def test_claiming_a_new_lease() -> None:
    record = claim(None, "me", 15.0, NOW)
    assert record == LeaseRecord("me", 15, micro_time(NOW), micro_time(NOW), 0)


def test_renewal_keeps_acquire_time_and_transitions() -> None:
    old = LeaseRecord("me", 15, "2026-05-01T11:00:00.000000Z", "2026-05-01T11:59:58.000000Z", 4)
    renewed = claim(old, "me", 15.0, NOW)
    assert renewed.acquire_time == old.acquire_time
    assert renewed.transitions == 4
    assert renewed.renew_time == micro_time(NOW)


def test_taking_over_counts_a_transition() -> None:
    old = LeaseRecord("other", 15, "2026-05-01T11:00:00.000000Z", "2026-05-01T11:59:00.000000Z", 4)
    taken = claim(old, "me", 15.0, NOW)
    assert taken.holder == "me"
    assert taken.acquire_time == micro_time(NOW)
    assert taken.transitions == 5


def test_a_released_lease_is_free_and_short() -> None:
    old = LeaseRecord("me", 15, "2026-05-01T11:00:00.000000Z", "2026-05-01T11:59:58.000000Z", 4)
    free = released(old, NOW)
    assert free.holder == ""
    assert free.lease_duration_seconds == 1
    assert free.transitions == 4
    assert not held_by_other(free, "next", observed_at=0.0, now=0.0)
