"""Stuck is not stale: a worker is stuck only when events wait on it and it does not advance."""

from datetime import UTC, datetime, timedelta

from twofold.health import Progress

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def test_a_caught_up_worker_has_stalled_for_nothing_however_long_it_has_been_idle() -> None:
    idle = Progress("p", position=10, head=10, last_progress=ago(3600), waiting_since=None)
    assert idle.lag == 0
    assert idle.stalled_for(NOW) == 0


def test_a_long_backlog_that_moves_is_not_stalled_beyond_its_last_batch() -> None:
    busy = Progress("p", position=10, head=100_000, last_progress=ago(0.5), waiting_since=ago(600))
    assert busy.lag == 99_990
    assert busy.stalled_for(NOW) == 0.5


def test_after_a_long_idle_new_work_counts_from_when_it_arrived() -> None:
    woken = Progress("p", position=10, head=11, last_progress=ago(3600), waiting_since=ago(0.2))
    assert woken.stalled_for(NOW) == 0.2


def test_a_worker_that_stopped_advancing_with_work_waiting_has_stalled_since_its_last_batch() -> None:
    frozen = Progress("p", position=10, head=12, last_progress=ago(90), waiting_since=ago(120))
    assert frozen.stalled_for(NOW) == 90
