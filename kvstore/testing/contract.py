"""``check_policy``: the contract every eviction policy must keep.

Under any sequence of inserts, hits, pins, unpins and removals, through the
real :class:`~kvstore.eviction.EvictionManager`, in both layouts:

- only stored, eligible keys are named (never a pinned one; in ``chained``,
  only leaves, so a parent never goes before its child);
- the requested bytes are freed whenever that is possible;
- no exception escapes the policy;
- the manager's invariants hold after every step, and so do the policy's own
  (its ``_check()``, when it has one);
- the same sequence gives the same victims (deterministic under a seed);
- none of it depends on magnitudes: sizes and capacity come scaled by 1, 1000
  or a million, entries carry priorities, admission is asked for every write,
  and one run per layout floods the tier with thousands of keys.

A failure is shrunk by hypothesis and reported as a replayable script.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from ..errors import CapacityError, PinQuotaError, PolicyError
from ..eviction import Entry, EvictionManager

__all__ = ["check_policy", "PolicyContractError"]

CAPACITY = 100
PIN_QUOTA = 40

_events = st.lists(st.tuples(st.sampled_from(["grow", "grow", "put", "tail", "hit", "pin", "pin", "unpin", "remove"]),
                             st.integers(0, 7), st.integers(1, 45), st.sampled_from([0, 0, 0, 1, 2])),
                   min_size=1, max_size=40)
#: sizes (and the capacity) are multiplied by one of these: a policy must not care about magnitudes
_scales = st.sampled_from([1, 1000, 1_000_000])
DEFAULT_EXAMPLES = 200
FLOOD_KEYS = 3000  # one run per layout with thousands of keys, priorities and admission at work


class PolicyContractError(AssertionError):
    """A policy broke the contract; the message holds a script that replays it."""


def _entry(op: str, i: int, size: int, priority: int = 0) -> Entry:
    if op == "flood":  # one of many unrelated single-block checkpoints
        return Entry(f"f{i}", tokens=1, size=size, priority=priority)
    key = f"n{i}" if op == "put" else f"t{i}"
    parent = f"n{i - 1}" if i else None
    return Entry(key, tokens=i + 1 if op == "put" else i + 1, size=size, parent=parent,
                 ancestors=tuple(f"n{j}" for j in range(i)), is_tail=op == "tail",
                 anchor=parent if op == "tail" else None, priority=priority)


def _flood(seed: int = 7) -> list[tuple[str, int, int, int]]:
    """Thousands of unrelated checkpoints of varied sizes and priorities, hits
    and pins among them, then chains again."""
    import random

    rng = random.Random(seed)
    events = []
    for i in range(FLOOD_KEYS):
        events.append(("flood", i, rng.randint(1, 45), rng.choice([0, 0, 0, 1, 2])))
        if rng.random() < 0.2:
            events.append(("hit-flood", rng.randrange(i + 1), 0, 0))
        if rng.random() < 0.02:
            events.append((rng.choice(["pin-flood", "unpin-flood"]), rng.randrange(max(1, i - 20), i + 1), 0, 0))
    events += [("grow", 0, rng.randint(1, 45), 0) for _ in range(20)]
    return events


def _run(make_policy, layout: str, events, script: list[str] | None = None, scale: int = 1) -> list[tuple[str, ...]]:
    """Drive one policy through ``events``; return the victims of every eviction."""
    policy = make_policy()
    capacity, quota = CAPACITY * scale, PIN_QUOTA * scale
    m = EvictionManager(capacity, policy, layout=layout, block_tokens=1, pin_quota_bytes=quota)
    log = script if script is not None else []
    log.append(f"m = EvictionManager({capacity}, policy, layout={layout!r}, block_tokens=1, "
               f"pin_quota_bytes={quota})")
    history: list[tuple[str, ...]] = []
    for t, (op, i, size, priority) in enumerate(events):
        size *= scale
        if op == "grow":  # extend the deepest stored chain: long chains come quickly
            op, i = "put", min(7, 1 + max((int(k[1:]) for k in m if k.startswith("n")), default=-1))
        if op in ("pin-flood", "unpin-flood", "hit-flood") and f"f{i}" in m:
            op, i = op[:-6], f"f{i}"  # the same operations on a flood key
        if op in ("put", "tail", "flood"):
            e = _entry(op, i, size, priority)
            if e.key in m or (layout == "chained" and e.parent is not None and e.parent not in m):
                continue
            log.append(f"victims = m.make_room(Entry({e.key!r}, tokens={e.tokens}, size={size}, "
                       f"parent={e.parent!r}, ancestors={e.ancestors!r}, is_tail={e.is_tail!r}, "
                       f"priority={priority}), now={t}"
                       + (f", protect={e.ancestors!r})" if layout == "chained" else ")"))
            pinned = {k for k in m if m.get(k).pinned}
            evictable = sum(m.get(k).size for k in m if not m.get(k).pinned)
            try:
                victims = m.make_room(e, t, protect=e.ancestors if layout == "chained" else ())
                if victims is None:  # declined: not admitted, or it would orphan itself
                    log.append("# declined")
                    continue
            except CapacityError:
                if layout == "snapshot" and size <= m.free_bytes + evictable and size <= capacity - m.pinned_bytes:
                    raise PolicyContractError(f"{size} bytes could have been freed but were not") from None
                continue
            except PolicyError as exc:
                raise PolicyContractError(str(exc)) from exc
            named = tuple(v.key for v in victims)
            history.append(named)
            if pinned & set(named):
                raise PolicyContractError(f"evicted pinned {sorted(pinned & set(named))}")
            if named:
                log.append(f"# evicted {list(named)}")
            log.append(f"m.insert(Entry({e.key!r}, tokens={e.tokens}, size={size}, parent={e.parent!r}, "
                       f"ancestors={e.ancestors!r}, is_tail={e.is_tail}, anchor={e.anchor!r}, "
                       f"priority={priority}), now={t})")
            try:
                m.insert(e, t)
            except PolicyError as exc:
                raise PolicyContractError(str(exc)) from exc
        elif op == "hit" and (key := i if isinstance(i, str) else f"n{i}") in m:
            log.append(f"m.record_hit({key!r}, now={t})")
            try:
                m.record_hit(key, t)
            except PolicyError as exc:
                raise PolicyContractError(str(exc)) from exc
        elif op == "pin" and (key := i if isinstance(i, str) else f"n{i}") in m:
            log.append(f"m.pin({key!r})")
            try:
                m.pin(key)
            except PinQuotaError:
                log.append("# PinQuotaError: over the quota, as expected")
            except PolicyError as exc:
                raise PolicyContractError(str(exc)) from exc
        elif op == "unpin" and (key := i if isinstance(i, str) else f"n{i}") in m:
            log.append(f"m.unpin({key!r})")
            m.unpin(key)
        elif op == "remove" and f"n{i}" in m and (layout == "snapshot" or not m.children(f"n{i}")):
            log.append(f"m.remove('n{i}')")
            try:
                m.remove(f"n{i}")
            except PolicyError as exc:
                raise PolicyContractError(str(exc)) from exc
        if layout == "chained":
            orphans = [k for k in m if m.get(k).parent is not None and m.get(k).parent not in m]
            if orphans:
                raise PolicyContractError(f"chained layout: {orphans} outlived their parent")
        try:  # the manager's invariants, and the policy's own (its ``_check``) after every step
            m._check()
        except AssertionError as exc:
            raise PolicyContractError(f"an invariant broke: {exc!r}") from exc
    return history


def check_policy(policy_class: type, *, layouts: tuple[str, ...] = ("snapshot", "chained"),
                 max_examples: int | None = None, **kwargs: Any) -> None:
    """Check that ``policy_class(**kwargs)`` keeps the policy contract.

    Raises :class:`PolicyContractError` with a shrunk, replayable script of
    calls when it does not. ``max_examples`` (per layout) defaults to 200, or
    the active hypothesis profile's if larger.

    Example::

        from policies import LRUPolicy
        check_policy(LRUPolicy, count_prefix_hits=False)
    """

    def make_policy():
        return policy_class(**kwargs)

    profile_examples = settings.default.max_examples
    for layout in layouts:
        overrides = {"max_examples": max_examples or max(DEFAULT_EXAMPLES, profile_examples)}

        @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None, **overrides)
        @given(events=_events, scale=_scales)
        def contract(events, scale):
            script = [f"policy = {policy_class.__name__}(**{kwargs!r})"]
            note("")
            try:
                first = _run(make_policy, layout, events, script, scale)
                second = _run(make_policy, layout, events, scale=scale)
                if first != second:
                    raise PolicyContractError(f"not deterministic: {first} then {second}")
            except PolicyContractError as exc:
                raise PolicyContractError(f"{policy_class.__name__} in the {layout} layout: {exc}\n"
                                          f"replay:\n    " + "\n    ".join(script)) from None

        contract()
        try:  # thousands of keys, once
            if _run(make_policy, layout, _flood()) != _run(make_policy, layout, _flood()):
                raise PolicyContractError("not deterministic over thousands of keys")
        except PolicyContractError as exc:
            raise PolicyContractError(f"{policy_class.__name__} in the {layout} layout, with "
                                      f"{FLOOD_KEYS} keys: {exc}") from None
