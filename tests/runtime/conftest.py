"""Fixtures of the runtime tests."""

import pytest

from hks_runtime import sandbox


@pytest.fixture
def fresh_probes():
    """Forget what was probed about this machine, before and after the test (for tests that change PATH or
    the limits mode: what they probe must not stay cached for the next tests of the same process)."""

    def clear():
        sandbox._probe.cache_clear()
        sandbox.runs_unprivileged.cache_clear()
        sandbox._cgroups.cache_clear()

    clear()
    yield
    clear()
