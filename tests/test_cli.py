import json
import os

import pytest

from kvstore import CheckpointStore
from kvstore.cli import main


@pytest.fixture
def filled(store_dir):
    with CheckpointStore(store_dir, capacity_bytes=4 << 20, block_tokens=8, namespace="cli") as store:
        for i in range(1, 5):
            store.put(list(range(8 * i)), bytes(1000 * i))
        store.lookup(list(range(40)))
    return store_dir


def test_stats_prints_a_table_and_json(filled, capsys):
    assert main(["stats", filled]) == 0
    out = capsys.readouterr().out
    assert "namespace='cli'" in out and "disk" in out and "hits 1" in out
    assert main(["stats", filled, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["entries"] == 4 and stats["tiers"]["disk"]["entries"] == 4


def test_verify_reports_then_repairs_a_flipped_bit(filled, capsys):
    assert main(["verify", filled]) == 0
    assert capsys.readouterr().out.startswith("4 ok, 0 bad, 0 missing")
    victim = next(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(filled, "data")) for f in fs)
    with open(victim, "r+b") as fh:
        fh.seek(-1, os.SEEK_END)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_END)
        fh.write(bytes([byte[0] ^ 1]))
    assert main(["verify", filled, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert len(report["bad"]) == 1 and len(report["ok"]) == 3
    assert os.path.exists(victim), "verify without --repair must not change the store"
    assert main(["verify", filled, "--repair"]) == 0
    assert main(["verify", filled]) == 0
    assert not os.path.exists(victim)


def test_verify_repair_rebuilds_a_destroyed_index(filled, capsys):
    with open(os.path.join(filled, "index", "data.mdb"), "wb") as fh:
        fh.write(b"\0" * 8192)
    assert main(["stats", filled]) == 2
    assert "--repair" in capsys.readouterr().err
    assert main(["verify", filled, "--repair"]) == 0
    assert "rebuilt it from the files" in capsys.readouterr().out
    with CheckpointStore(filled) as store:
        assert store.load_longest(list(range(40))) == (32, bytes(4000))
        store._check()


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["stats", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kvstore: error:") and "does not exist" in err


def test_help_teaches(capsys):
    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    out = capsys.readouterr().out
    assert "--repair" in out and "quarantined" in out


def test_ls_lists_every_checkpoint_readable_at_80_columns(filled, capsys):
    assert main(["ls", filled]) == 0
    out = capsys.readouterr().out
    assert all(len(line) <= 80 for line in out.splitlines()), max(map(len, out.splitlines()))
    assert "4 checkpoints" in out and "32" in out
    assert main(["ls", filled, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["tokens"] for r in rows] == [8, 16, 24, 32]
    assert rows[3]["hits"] == 1 and not any(r["pinned"] for r in rows)


def test_pin_unpin_and_evict_from_the_shell(filled, tmp_path, capsys):
    tokens = tmp_path / "prompt.json"
    tokens.write_text(json.dumps(list(range(20))))  # its longest stored prefix: 16 tokens
    assert main(["pin", filled, "--tokens", str(tokens)]) == 0
    assert "16 tokens" in capsys.readouterr().out
    assert main(["evict", filled, "--to", "0"]) == 0
    assert "evicted 3 checkpoints" in capsys.readouterr().out  # the pinned one stays
    assert main(["ls", filled, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["tokens"], r["pinned"]) for r in rows] == [(16, True)]
    (tmp_path / "plain.txt").write_text(" ".join(map(str, range(20))))
    assert main(["unpin", filled, "--tokens", str(tmp_path / "plain.txt")]) == 0
    assert main(["evict", filled, "--to", "0"]) == 0
    assert "evicted 1 checkpoints" in capsys.readouterr().out
    (tmp_path / "bad.txt").write_text("one two")
    assert main(["pin", filled, "--tokens", str(tmp_path / "bad.txt")]) == 2
    assert "--tokens" in capsys.readouterr().err
    assert main(["evict", filled, "--to", "lots"]) == 2
    assert "--to: not a size" in capsys.readouterr().err
