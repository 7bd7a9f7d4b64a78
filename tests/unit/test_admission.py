"""The receiver's admission limit: shed only while answers are slow."""

from __future__ import annotations

from orderpulse.connectors.webhook import MAX_IN_FLIGHT, MIN_IN_FLIGHT, Admission


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_second(a: Admission, clock: Clock, requests: int, took_s: float) -> None:
    """``requests`` admitted and answered within one second, each taking ``took_s``."""
    start = clock.now
    for i in range(requests):
        clock.now = start + i * (1.0 / requests)
        at = a.admit()
        assert at is not None
        clock.now = at + took_s
        a.done(at)
    clock.now = start + 1.0 + took_s


def test_a_burst_after_a_quiet_second_is_admitted_whole() -> None:
    clock = Clock()
    a = Admission(clock)
    run_second(a, clock, 20, took_s=0.02)  # a trickle: a low pace, but fast answers
    a.done(a.admit() or 0.0)  # closes the window
    assert a.limit == MAX_IN_FLIGHT
    admitted = [a.admit() for _ in range(200)]  # the payments of a flash sale
    assert None not in admitted


def test_slow_answers_limit_to_what_the_pace_clears_then_it_recovers() -> None:
    clock = Clock()
    a = Admission(clock)
    run_second(a, clock, 300, took_s=1.5)  # queueing: every answer took 1.5 s
    assert MIN_IN_FLIGHT <= a.limit < MAX_IN_FLIGHT
    limited = a.limit
    assert [a.admit() is not None for _ in range(limited + 5)].count(False) == 5
    for _ in range(limited):
        a.done(clock.now)
    # Fast seconds double the limit back to the maximum.
    for _ in range(6):
        run_second(a, clock, 100, took_s=0.01)
    assert a.limit == MAX_IN_FLIGHT


def test_an_idle_gap_resets_the_limit() -> None:
    clock = Clock()
    a = Admission(clock)
    run_second(a, clock, 300, took_s=1.5)
    assert a.limit < MAX_IN_FLIGHT
    clock.now += 5.0
    a.done(a.admit() or 0.0)
    assert a.limit == MAX_IN_FLIGHT
