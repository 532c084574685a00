"""Picking a compiled twin or its pure-Python original.

Two structures behind the built-in policies have a twin in C that pip builds
as it installs (``_age_buckets``, ``_staircase``); each makes the same
decisions as its Python original, faster. An install without a C compiler
has only the originals.

>>> import policies.staircase as original
>>> pick(False, "_staircase", "Staircase", original.Staircase) is original.Staircase
True
"""

from __future__ import annotations

import importlib

__all__ = ["compiled", "pick"]


def compiled(module: str, name: str) -> type | None:
    """Class ``name`` of the compiled module ``policies.<module>``, or None when
    the package was installed without it.

    >>> compiled("_no_such_module", "Anything") is None
    True
    """
    try:
        loaded = importlib.import_module(f"policies.{module}")
    except ImportError:
        return None
    cls: type = getattr(loaded, name)
    return cls


def pick(native: object, module: str, name: str, original: type) -> type:
    """The class to build: the compiled twin when it was built (``native=None``),
    required (``True``: ImportError without it) or ``original`` (``False``).

    >>> pick("yes", "_staircase", "Staircase", object)
    Traceback (most recent call last):
    ...
    ValueError: native must be None, True or False, got 'yes'
    """
    if native not in (None, True, False):
        raise ValueError(f"native must be None, True or False, got {native!r}")
    if native is not False:
        cls = compiled(module, name)
        if cls is not None:
            return cls
        if native:
            raise ImportError(f"policies.{module} was not built: reinstall kvstore with a C compiler "
                              f"(pip install -e .), or pass native=None to fall back to Python")
    return original
