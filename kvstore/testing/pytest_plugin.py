"""pytest plugin (entry point ``pytest11``): fixtures for the conformance kit.

In a test of your own::

    def test_my_policy(policy_contract):
        policy_contract(MyPolicy, window=10)

    def test_my_store_configuration(store_conformance):
        store_conformance(policy="my-policy", block_tokens=256)
"""

from __future__ import annotations

import pytest


@pytest.fixture
def policy_contract():
    """``policy_contract(PolicyClass, **kwargs)`` runs :func:`kvstore.testing.check_policy`."""
    from kvstore.testing import check_policy

    return check_policy


@pytest.fixture
def store_conformance():
    """``store_conformance(**store_kwargs)`` runs :func:`kvstore.testing.check_store`."""
    from kvstore.testing import check_store

    return check_store
