"""Third-party policies: registered through the ``kvstore.policies`` entry-point
group, or passed as an instance without registering."""

import sys

import pytest

import policies
from kvstore import CheckpointStore

PLUGIN = '''
from policies import ScoredPolicy

class BiggestFirst(ScoredPolicy):
    name = "biggest-first"
    description = "evicts the largest checkpoint first"

    def score(self, key, now):
        return -self.view.entry(key).size
'''


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "my_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[kvstore.policies]\nbiggest-first = my_plugin:BiggestFirst\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("my_plugin", None)


def test_an_entry_point_policy_is_listed_and_drives_the_store(installed_plugin, store_dir):
    assert policies.available()["biggest-first"] == "evicts the largest checkpoint first"
    with CheckpointStore(store_dir, capacity_bytes=(1 << 20) + 300_000, block_tokens=4, namespace="p",
                         policy="biggest-first") as store:
        store.put([1, 2, 3, 4], bytes(150_000))
        store.put([5, 6, 7, 8], bytes(10_000))
        store.put([9, 9, 9, 9], bytes(140_000))
        assert store.lookup([1, 2, 3, 4]) is None  # the biggest went first
        assert store.lookup([5, 6, 7, 8]) is not None


def test_an_unregistered_policy_instance_works_too(store_dir):
    class NewestFirst(policies.ScoredPolicy):
        def score(self, key, now):
            return -self.view.entry(key).inserted_at

    with CheckpointStore(store_dir, capacity_bytes=(1 << 20) + 250_000, block_tokens=4, namespace="p",
                         policy=NewestFirst(), clock=iter(range(100)).__next__) as store:
        store.put([1, 2, 3, 4], bytes(100_000))
        store.put([5, 6, 7, 8], bytes(100_000))
        store.put([9, 9, 9, 9], bytes(100_000))
        assert store.lookup([5, 6, 7, 8]) is None and store.lookup([1, 2, 3, 4]) is not None
