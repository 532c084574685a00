"""When the LMDB index slice fills up, the store evicts to make room instead of failing."""

from kvstore import CheckpointStore


def test_many_tiny_checkpoints_fill_the_index_and_the_store_evicts(store_dir):
    with CheckpointStore(store_dir, capacity_bytes=2 << 20, index_bytes=1 << 20, block_tokens=1,
                         namespace="tiny") as store:
        for i in range(1500):
            assert store.put([i, i + 1, i + 2], b"") is True
        stats = store.stats()
        assert stats["evictions"] > 0 and stats["puts"] == 1500  # evicted for index room, not bytes
        assert stats["tiers"]["disk"]["bytes"] < (1 << 20) // 4
        assert store.lookup([1499, 1500, 1501]).tokens == 3
        store._check()
