"""Policy registry: built-in names, plus third-party ones from entry points.

A third-party package registers a policy class in its ``pyproject.toml``::

    [project.entry-points."kvstore.policies"]
    my-policy = "my_package.module:MyPolicy"

>>> "lru" in available()
True
>>> get("lru").name
'lru'
"""

from __future__ import annotations

import inspect
from importlib.metadata import entry_points
from typing import Any

from .base import Policy
from .belady import BeladyPolicy, BeladySizePolicy
from .ds4_density import Ds4DensityPolicy
from .field import HiCachePolicy, MarconiPolicy, VllmOffloadPolicy
from .lru import LRUPolicy
from .prefix_chain import PrefixChainPolicy
from .simple import FIFOPolicy, GDSFPolicy, LFUPolicy, RandomPolicy

__all__ = ["available", "get", "resolve", "online", "offline", "is_offline", "BUILTIN", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "kvstore.policies"

BUILTIN: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (PrefixChainPolicy, LRUPolicy, FIFOPolicy, LFUPolicy, GDSFPolicy, Ds4DensityPolicy,
                RandomPolicy, HiCachePolicy, VllmOffloadPolicy, MarconiPolicy, BeladyPolicy,
                BeladySizePolicy)
}


def online() -> list[str]:
    """Names of the built-in policies an engine can run (all but offline references)."""
    return [name for name, cls in BUILTIN.items() if not cls.offline]


def offline() -> list[str]:
    """Names of the built-in offline references (they need the future: simulator only)."""
    return [name for name, cls in BUILTIN.items() if cls.offline]


def is_offline(policy: object) -> bool:
    """Whether ``policy`` (a name or an instance) is an offline reference.

    >>> is_offline("belady"), is_offline("lru")
    (True, False)
    """
    if isinstance(policy, str):
        cls = BUILTIN.get(policy)
        if cls is None:
            ep = _entry_point_classes().get(policy)
            cls = ep.load() if ep is not None else None
        return bool(getattr(cls, "offline", False))
    return bool(getattr(policy, "offline", False))


def _entry_point_classes() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> dict[str, str]:
    """Registered policy names mapped to their one-line descriptions."""
    names = {name: cls.description for name, cls in BUILTIN.items()}
    for name, ep in _entry_point_classes().items():
        if name not in names:
            try:
                names[name] = getattr(ep.load(), "description", "")
            except Exception as exc:  # a broken plugin must not hide the others
                names[name] = f"(failed to load: {exc})"
    return dict(sorted(names.items()))


def get(name: str, **kwargs: Any) -> Policy:
    """A new instance of the policy registered as ``name``, configured by ``kwargs``."""
    if not isinstance(name, str):
        raise TypeError(f"policy name must be a str, not {type(name).__name__}")
    cls: Any = BUILTIN.get(name)
    if cls is None:
        ep = _entry_point_classes().get(name)
        if ep is None:
            raise ValueError(f"unknown policy {name!r}; available: {', '.join(available())}")
        cls = ep.load()
    options = _options(cls)
    unknown = sorted(set(kwargs) - set(options))
    if unknown and "**" not in options:
        raise TypeError(f"policy {name!r} has no option {unknown[0]!r}; "
                        f"options: {', '.join(options) or '(none)'}")
    return cls(**kwargs)


def _options(cls: type) -> list[str]:
    """Names of the keyword arguments a policy class accepts."""
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return ["**"]
    return ["**" if p.kind is p.VAR_KEYWORD else p.name for p in params
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_KEYWORD)]


def resolve(policy: str | Policy, **kwargs: Any) -> Policy:
    """Accept a registered name or a policy instance; return an instance.

    >>> resolve("ds4-density").name
    'ds4-density'
    """
    if isinstance(policy, str):
        return get(policy, **kwargs)
    if isinstance(policy, type):
        raise TypeError(f"policy must be a name or an instance, not the class {policy.__name__}; "
                        f"pass {policy.__name__}()")
    if kwargs:
        raise TypeError("policy keyword arguments apply only when policy is given by name")
    for hook in ("victim", "attach", "on_insert", "on_remove", "on_eligible"):
        if not callable(getattr(policy, hook, None)):
            raise TypeError(f"policy must be a registered name or a Policy instance; "
                            f"{type(policy).__name__} has no {hook}()")
    return policy
