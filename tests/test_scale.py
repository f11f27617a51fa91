"""Scaling advice per queue (dtf/scale.py): each rule with numbers worked by hand."""

from __future__ import annotations

from dtf.scale import QueueLoad, ScalePolicy, advise

POLICY = ScalePolicy(target_s=600, band=0.25, low_utilisation=0.5, cooldown_s=300, min_workers=0, unknown_test_s=60)


def one(load: QueueLoad, policy: ScalePolicy = POLICY):  # type: ignore[no-untyped-def]
    (advice,) = advise([load], policy)
    return advice


def test_waiting_tests_and_no_worker_ask_for_workers() -> None:
    a = one(QueueLoad("dtf.cuda", queued_s=[300.0] * 10))  # 3000 s of work: 5 slots for 600 s
    assert (a.action, a.count) == ("add", 5)
    assert a.slots == 0 and a.drain_s is None and "no live worker" in a.reason


def test_a_backlog_past_the_band_adds_workers_by_their_slots() -> None:
    # 40 tests x 120 s = 4800 s on 2 workers x 2 slots: drains in 1200 s > 600 x 1.25
    a = one(QueueLoad("dtf.cpu", queued_s=[120.0] * 40, running=4, worker_slots=[2, 2]))
    assert a.backlog_s == 4800 and a.drain_s == 1200
    # 8 slots needed, 4 held: 2 more workers of 2 slots
    assert (a.action, a.count) == ("add", 2)


def test_unknown_durations_count_as_the_default() -> None:
    a = one(QueueLoad("dtf.cpu", queued_s=[None] * 30, running=1, worker_slots=[1]))
    assert a.unknown == 30 and a.backlog_s == 1800  # 30 x 60 s
    assert (a.action, a.count) == ("add", 2)  # 3 slots needed, 1 held


def test_inside_the_band_holds() -> None:
    a = one(QueueLoad("dtf.cpu", queued_s=[100.0] * 26, running=4, worker_slots=[2, 2]))  # 650 s: within 750
    assert (a.action, a.count) == ("hold", 0)


def test_idle_workers_are_removed_down_to_what_runs_and_waits() -> None:
    a = one(QueueLoad("dtf.cpu", queued_s=[10.0], running=1, worker_slots=[2, 2, 2, 2]))
    assert a.utilisation == 0.125
    # keeps 2 slots (1 running + 1 waiting) = 1 worker: remove 3
    assert (a.action, a.count) == ("remove", 3)


def test_min_workers_are_kept() -> None:
    policy = ScalePolicy(min_workers=2)
    a = one(QueueLoad("dtf.cpu", worker_slots=[1, 1, 1]), policy)
    assert (a.action, a.count) == ("remove", 1)
    assert one(QueueLoad("dtf.cpu", worker_slots=[1, 1]), policy).action == "hold"


def test_the_cool_down_holds_a_change_it_would_make() -> None:
    a = one(QueueLoad("dtf.cpu", queued_s=[120.0] * 40, running=4, worker_slots=[2, 2], last_change_age_s=60))
    assert (a.action, a.count) == ("hold", 0) and "would add 2" in a.reason
    b = one(QueueLoad("dtf.cpu", queued_s=[120.0] * 40, running=4, worker_slots=[2, 2], last_change_age_s=301))
    assert (b.action, b.count) == ("add", 2)
