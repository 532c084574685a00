"""Property-based conformance kit for policy authors and engine integrators.

Importing this module needs ``hypothesis`` (``pip install kvstore[test]``);
the rest of kvstore does not.

- :func:`check_policy` runs any policy through the eviction manager under
  generated event sequences and checks the contract; a failure is shrunk and
  printed as a short script of calls that replays it.
- :class:`StoreStateMachine` / :func:`check_store` drive a
  :class:`~kvstore.CheckpointStore` of any configuration side by side with a
  reference model through put / lookup / load / load_longest / pin / reopen /
  crash.
- :func:`check_tier` checks a tier (``kvstore.tiers.Tier``) keeps the protocol
  a store's stack relies on: ``check_tier(lambda: MyTier(...))``.
- :mod:`kvstore.testing.strategies`: realistic prompts and payloads (the
  simulator's trace strategy is :mod:`simulator.strategies`).
- :mod:`kvstore.testing.redis_servers`: a real 3-master Redis Cluster or a
  single server on loopback, in a temporary directory, for testing a shared
  tier (needs ``redis-server`` and ``redis-cli``).

Example::

    from kvstore.testing import check_policy
    check_policy(MyPolicy, some_option=3)   # raises AssertionError with a replay script
"""

from .contract import PolicyContractError, check_policy
from .machine import StoreStateMachine, check_store
from .strategies import payloads, prompt_families
from .tiers import TierContractError, check_tier

__all__ = ["check_policy", "PolicyContractError", "StoreStateMachine", "check_store", "check_tier",
           "TierContractError",
           "payloads", "prompt_families"]
