"""Restart policy: backoff doubles within the window, resets outside it, and gives up past the
allowed restarts."""

from __future__ import annotations

import pytest

from hybridinference.launcher.restarts import CrashHistory, RestartPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_up_to_the_cap_then_gives_up() -> None:
    clock = Clock()
    policy = RestartPolicy(max_restarts=5, window_s=60, first_delay_s=0.5, max_delay_s=4)
    history = CrashHistory(policy, clock)
    delays = []
    for _ in range(5):
        delays.append(history.crashed())
        clock.now += 1
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert history.crashed() is None
    assert history.recent == 6


def test_crashes_outside_the_window_are_forgotten() -> None:
    clock = Clock()
    history = CrashHistory(RestartPolicy(max_restarts=1, window_s=10, first_delay_s=0.25), clock)
    assert history.crashed() == 0.25
    clock.now += 10.5
    # The first crash left the window: this is a first crash again, not a second.
    assert history.crashed() == 0.25
    clock.now += 1
    assert history.crashed() is None


def test_zero_restarts_gives_up_at_once() -> None:
    assert CrashHistory(RestartPolicy(max_restarts=0)).crashed() is None


def test_a_nonsense_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        RestartPolicy(window_s=0)
