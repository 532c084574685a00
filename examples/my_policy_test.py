# Ten lines: a policy of your own, checked by the conformance kit (pytest examples/my_policy_test.py).
from kvstore.testing import check_policy, check_store
from policies import ScoredPolicy


class SmallestFirst(ScoredPolicy):
    def score(self, key, now):
        return self.view.entry(key).size  # evict the smallest checkpoint first


def test_my_policy():
    check_policy(SmallestFirst)                 # any event sequence, both layouts
    check_store(policy=SmallestFirst(), max_examples=10)  # a real store, reopened and crashed
