"""The bookkeeping of a project's instance quota (hks_runtime/quotas.py): who counts, who waits, in which
order. The behaviour on a real daemon is in test_project_quota.py."""

from __future__ import annotations

from types import SimpleNamespace

from hks_runtime.quotas import ProjectQuotas


def _fn(namespace: str, name: str, live: int = 0):
    return SimpleNamespace(
        spec=SimpleNamespace(namespace=namespace, name=name), key=(namespace, name), live=live
    )


class _Inst:
    """Hashed by identity, as an Instance (``eq=False``) is."""

    def __init__(self, namespace: str):
        self.namespace = namespace


def _inst(namespace: str) -> _Inst:
    return _Inst(namespace)


def test_a_cap_counts_its_own_namespace_only_and_zero_is_none():
    quotas = ProjectQuotas()
    quotas.set_cap("a", 2)
    a1, a2, b1 = _inst("a"), _inst("a"), _inst("b")
    for inst in (a1, a2, b1):
        quotas.add(inst)
    assert not quotas.allows("a") and quotas.allows("b")  # b has no cap
    assert quotas.allows("a", besides=1)  # a rollout replacing one of a's instances
    assert quotas.discard(a1) and not quotas.discard(a1)  # a place freed once
    assert quotas.allows("a")
    quotas.set_cap("a", 0)
    quotas.add(_inst("a"))
    quotas.add(_inst("a"))
    assert quotas.allows("a")


def test_raising_or_removing_a_cap_says_there_is_room_and_lowering_does_not():
    quotas = ProjectQuotas()
    assert not quotas.set_cap("a", 3)  # from none to 3: less room
    assert not quotas.set_cap("a", 2)
    assert quotas.set_cap("a", 4)
    assert quotas.set_cap("a", 0)
    assert not quotas.set_cap("a", 0)


def test_held_functions_wait_in_order_and_one_served_goes_behind_the_others():
    quotas = ProjectQuotas()
    early, late, other = _fn("a", "early"), _fn("a", "late"), _fn("b", "other")
    assert quotas.hold(early) and quotas.hold(late) and quotas.hold(other)
    assert not quotas.hold(early)  # already waiting: no second log line
    assert quotas.held_in("a") == [early, late] and quotas.held_in("b") == [other]
    quotas.requeue(early)  # it had its turn and wants more
    assert quotas.held_in("a") == [late, early]
    quotas.release(late)
    assert quotas.held_in("a") == [early] and not quotas.is_held(late)
    assert sorted(quotas.namespaces_waiting()) == ["a", "b"]


def test_a_function_made_again_under_a_deleted_ones_name_takes_its_place_in_the_queue():
    quotas = ProjectQuotas()
    gone, other = _fn("a", "same"), _fn("a", "other")
    quotas.hold(gone)
    quotas.hold(other)
    again = _fn("a", "same")
    assert quotas.hold(again)
    quotas.release(gone)  # the deleted one's release does not drop the new one
    assert quotas.held_in("a") == [again, other]


def test_the_message_says_how_many_run_and_the_cap():
    quotas = ProjectQuotas()
    quotas.set_cap("a", 1)
    assert quotas.message(_fn("a", "f", live=1)) == "held at 1 instance: project quota of 1 instance reached"
    quotas.set_cap("a", 20)
    assert (
        quotas.message(_fn("a", "f", live=0)) == "held at 0 instances: project quota of 20 instances reached"
    )
