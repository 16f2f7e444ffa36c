"""The pool's sizing policy (pool_policy.py) on its own clock: grows to recent demand, capped, forgets it."""

from __future__ import annotations

from hks_runtime import pool_policy
from hks_runtime.pool_policy import PoolPolicy


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_target_follows_the_peak_of_the_window_within_minimum_and_cap():
    clock = Clock()
    policy = PoolPolicy(2, 10, window=300, clock=clock)
    assert policy.target() == 2
    for concurrent in range(1, 51):  # a burst of 50
        policy.claimed(concurrent)
    assert policy.demand() == 50 and policy.target() == 10  # capped
    assert policy.surplus(10) == 0
    clock.now += 200
    policy.claimed(3)  # later, quieter claims do not lower the target while the burst is remembered
    assert policy.target() == 10
    clock.now += 101  # the burst's slice has left the window; the quieter claims' has not
    assert policy.target() == 3 and policy.surplus(10) == 7
    clock.now += 300
    assert policy.demand() == 0 and policy.target() == 2 and policy.surplus(10) == 8


def test_a_window_of_zero_is_a_fixed_pool_and_the_cap_never_goes_below_the_minimum():
    fixed = PoolPolicy(2, 50, window=0)
    fixed.claimed(40)
    assert fixed.target() == 2
    assert PoolPolicy(60, 50).maximum == 60  # a pool set to 60 keeps 60


def test_the_cap_is_bounded_by_the_machines_memory(monkeypatch):
    monkeypatch.setattr(pool_policy, "memory_cap", lambda agent_mb=35: 7)
    policy = PoolPolicy(2, 50)
    policy.claimed(50)
    assert policy.maximum == 7 and policy.target() == 7


def test_the_default_one_shot_pool_is_one_kernel_per_gib_between_2_and_16(monkeypatch):
    from hks_runtime import pool_policy

    pages = {"SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(pool_policy.os, "sysconf", lambda name: pages.get(name) or pages["SC_PHYS_PAGES"])
    for gib, expected in ((1, 2), (4, 4), (8, 8), (24, 16), (256, 16)):
        pages["SC_PHYS_PAGES"] = gib * 2**30 // 4096
        assert pool_policy.execute_pool_default() == expected
