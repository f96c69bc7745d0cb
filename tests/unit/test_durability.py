"""What REDIS_DURABILITY accepts of a Redis's persistence, and the gate webhooks ask."""

from __future__ import annotations

import logging

import pytest

from pyloto_corp.application.durability import (
    RECHECK_SECONDS,
    DurabilityGate,
    Persistence,
    Required,
    refusal,
)
from pyloto_corp.application.ports import StoreNotDurable, StoreUnavailable

pytestmark = pytest.mark.anyio

ALWAYS = Persistence(aof=True, fsync="always", rdb=False)
EVERYSEC = Persistence(aof=True, fsync="everysec", rdb=True)
FSYNC_NO = Persistence(aof=True, fsync="no", rdb=False)
RDB = Persistence(aof=False, fsync="everysec", rdb=True)
NONE = Persistence(aof=False, fsync="everysec", rdb=False)
MANAGED_AOF = Persistence(aof=True, fsync=None, rdb=None)  # CONFIG refused
MANAGED_NO_AOF = Persistence(aof=False, fsync=None, rdb=None)


@pytest.mark.parametrize(
    ("persistence", "accepted_under"),
    [
        (ALWAYS, {"always", "everysec", "none"}),
        (EVERYSEC, {"everysec", "none"}),
        (MANAGED_AOF, {"everysec", "none"}),
        (FSYNC_NO, {"none"}),
        (RDB, {"none"}),
        (NONE, {"none"}),
        (MANAGED_NO_AOF, {"none"}),
    ],
)
def test_what_each_requirement_accepts(persistence: Persistence, accepted_under: set[str]) -> None:
    requirements: list[Required] = ["always", "everysec", "none"]
    accepted = {r for r in requirements if refusal(persistence, r) is None}
    assert accepted == accepted_under


def test_a_declared_fsync_stands_only_for_one_redis_does_not_show() -> None:
    """Where CONFIG is refused (Memorystore), REDIS_APPENDFSYNC says what its AOF's sync
    setting is; where CONFIG answers, what Redis says wins."""
    assert refusal(MANAGED_AOF, "always", "always") is None
    assert refusal(MANAGED_AOF, "always", "everysec") is not None
    assert refusal(EVERYSEC, "always", "always") is not None
    assert refusal(MANAGED_NO_AOF, "always", "always") is not None


def test_a_refusal_names_the_setting_that_accepts_the_loss() -> None:
    for persistence in (EVERYSEC, FSYNC_NO, RDB, NONE, MANAGED_AOF, MANAGED_NO_AOF):
        reason = refusal(persistence, "always")
        assert reason is not None
        assert "REDIS_ALLOW_NO_PERSISTENCE=true" in reason
        assert "\n" not in reason


def test_modes_as_ready_shows_them() -> None:
    assert [p.mode for p in (ALWAYS, EVERYSEC, RDB, NONE, MANAGED_AOF, MANAGED_NO_AOF)] == [
        "aof",
        "aof+rdb",
        "rdb",
        "none",
        "aof",
        "unknown",
    ]


class Probe:
    """A store whose persistence the test sets; counts how often it is read."""

    def __init__(self, persistence: Persistence | None) -> None:
        self.persistence = persistence
        self.calls = 0

    async def __call__(self) -> Persistence:
        self.calls += 1
        if self.persistence is None:
            raise StoreUnavailable("down")
        return self.persistence


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_nothing_is_admitted_before_a_check_has_passed() -> None:
    probe, clock = Probe(None), Clock()
    gate = DurabilityGate(probe, "always", clock)
    with pytest.raises(StoreUnavailable) as refused:
        await gate.admit()
    assert not isinstance(refused.value, StoreNotDurable), "an outage, not a refusal"
    probe.persistence = ALWAYS
    clock.now += RECHECK_SECONDS
    await gate.admit()
    await gate.admit()
    assert probe.calls == 2, "a durable store is not re-read per webhook"


async def test_a_refusing_gate_rechecks_at_most_once_per_interval() -> None:
    probe, clock = Probe(RDB), Clock()
    gate = DurabilityGate(probe, "always", clock)
    for _ in range(50):
        with pytest.raises(StoreNotDurable, match="RDB snapshots"):
            await gate.admit()
    assert probe.calls == 1
    clock.now += RECHECK_SECONDS
    with pytest.raises(StoreNotDurable):
        await gate.admit()
    assert probe.calls == 2


async def test_a_store_failure_makes_the_next_webhook_check_again() -> None:
    probe, clock = Probe(ALWAYS), Clock()
    gate = DurabilityGate(probe, "always", clock)
    await gate.admit()
    probe.persistence = NONE  # a Redis restarted without persistence behind the failure
    gate.invalidate()
    with pytest.raises(StoreNotDurable, match="neither AOF nor RDB"):
        await gate.admit()


async def test_one_line_when_it_stops_holding_and_one_when_it_holds_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not one per check or per webhook: a flood of refused webhooks logs nothing more, and
    a start on a durable store or an outage logs nothing here at all."""
    probe, clock = Probe(ALWAYS), Clock()
    gate = DurabilityGate(probe, "always", clock)
    caplog.set_level(logging.INFO, logger="pyloto_corp")
    await gate.check()
    probe.persistence = None
    await gate.check()
    probe.persistence = ALWAYS
    await gate.check()
    assert [r.__dict__.get("event") for r in caplog.records] == []

    probe.persistence = RDB
    for _ in range(5):
        await gate.check()
        clock.now += RECHECK_SECONDS
        with pytest.raises(StoreNotDurable):
            await gate.admit()
    probe.persistence = ALWAYS
    await gate.check()
    await gate.admit()
    events = [(r.__dict__.get("event"), r.levelno) for r in caplog.records]
    assert events == [("store_not_durable", logging.ERROR), ("store_durable", logging.WARNING)]
