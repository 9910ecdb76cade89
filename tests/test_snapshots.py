import numpy as np
import pytest

from fl_sim.errors import SnapshotError
from fl_sim.snapshots import SnapshotStore


def _arrays(v):
    return {"w": np.full((3, 2), v, np.float32), "b": np.arange(3, dtype=np.float32)}


def test_roundtrip_index_and_size(tmp_path):
    s = SnapshotStore(tmp_path)
    s.put(1, None, "global", _arrays(1.0))
    s.put(1, 0, "upload", _arrays(2.0), num_examples=30)
    assert [(e.round, e.participant, e.role) for e in s.entries()] == [(1, None, "global"),
                                                                        (1, 0, "upload")]
    np.testing.assert_array_equal(s.get(1, 0, "upload")["w"], _arrays(2.0)["w"])
    assert s.find(1, 0, "upload").num_examples == 30
    assert s.size_bytes() > 0 and s.verify() == []
    assert not list(tmp_path.glob("*.tmp"))


def test_keep_rounds_bounds_disk(tmp_path):
    s = SnapshotStore(tmp_path, keep_rounds=[2])
    assert s.put(1, 0, "upload", _arrays(1.0)) is None
    assert s.put(2, 0, "upload", _arrays(1.0)) is not None
    assert s.rounds("upload") == [2]


def test_rolling_keeps_the_kept_rounds_and_only_the_latest_other_one(tmp_path):
    s = SnapshotStore(tmp_path, keep_rounds=[2])
    for rnd in range(1, 6):  # what the aggregator does: store the aggregate, forget the previous
        s.put(rnd, None, "global", _arrays(float(rnd)), force=True)
        s.roll(rnd - 1)
    assert s.rounds("global") == [2, 5]
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == [
        "r0002-server-global.safetensors", "r0005-server-global.safetensors"]
    np.testing.assert_array_equal(s.get(5, None, "global")["w"], _arrays(5.0)["w"])
    every = SnapshotStore(tmp_path / "all")  # keep_rounds None: every round stays
    for rnd in range(1, 4):
        every.put(rnd, None, "global", _arrays(float(rnd)))
        every.roll(rnd - 1)
    assert every.rounds("global") == [1, 2, 3]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_file_is_detected_and_named(tmp_path, damage):
    s = SnapshotStore(tmp_path)
    e = s.put(3, 1, "upload", _arrays(5.0))
    path = tmp_path / e.file
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError) as err:
        s.get(3, 1, "upload")
    assert e.file in str(err.value) and "checksum" in str(err.value)
    assert len(s.verify()) == 1


def test_client_shards_merge(tmp_path):
    SnapshotStore(tmp_path).put(1, None, "global", _arrays(0.0))
    SnapshotStore(tmp_path, writer="p3").put(2, 3, "received", _arrays(0.0))
    s = SnapshotStore(tmp_path)
    assert s.find(2, 3, "received") is not None and s.find(1, None, "global") is not None
    s.drop_after(1)
    assert s.find(2, 3, "received") is None


def test_resume_forgets_unkept_rounds_a_kill_left_behind(tmp_path):
    # killed after storing round 3's aggregate but before rolling round 2's: the resumed
    # store must hold what an uninterrupted run holds (kept rounds and the latest one)
    s = SnapshotStore(tmp_path, keep_rounds=[1])
    for r in (1, 2, 3):
        s.put(r, None, "global", _arrays(float(r)), force=True)
        s.put(r, 0, "upload", _arrays(float(r)), force=True)
    s.put(4, 0, "upload", _arrays(4.0), force=True)
    s.drop_after(3)
    assert sorted({e.round for e in s.entries()}) == [1, 3]
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == [
        "r0001-p0-upload.safetensors", "r0001-server-global.safetensors",
        "r0003-p0-upload.safetensors", "r0003-server-global.safetensors"]


def test_snapshots_skip_fsync_and_results_do_not(tmp_path, monkeypatch):
    # a round stores several snapshots: an fsync each costs tens of ms; a kill does not need
    # it (the rename is atomic, the kernel keeps the data), the run's results do
    import os

    from fl_sim.io import write_json

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    s = SnapshotStore(tmp_path / "s", keep_rounds=[1])
    s.put(1, 0, "upload", _arrays(1.0))
    s.put(2, None, "global", _arrays(2.0), force=True)
    s.roll(2)
    assert synced == [] and s.get(1, 0, "upload")["w"][0, 0] == 1.0
    write_json(tmp_path / "results.json", {"a": 1})
    assert len(synced) == 2   # the file, then its directory


def _rounds_of_a_federation(store):
    """What the aggregator does over 6 rounds: uploads (kept rounds only), the aggregate
    every round, and the previous unkept round rolled."""
    for rnd in range(1, 7):
        for pid in range(2):
            store.put(rnd, pid, "upload", _arrays(10 * rnd + pid), num_examples=5)
        store.put(rnd, None, "global", _arrays(rnd), force=True)
        store.roll(rnd - 1)


def test_background_writes_leave_what_synchronous_writes_leave(tmp_path):
    sync = SnapshotStore(tmp_path / "sync", keep_rounds=[2, 3])
    bg = SnapshotStore(tmp_path / "bg", keep_rounds=[2, 3], background=True)
    _rounds_of_a_federation(sync)
    _rounds_of_a_federation(bg)
    assert bg.entries() == sync.entries()  # a read waits for the queue
    assert sorted(p.name for p in bg.dir.iterdir()) == sorted(p.name for p in sync.dir.iterdir())
    for e in sync.entries():
        assert (bg.dir / e.file).read_bytes() == (sync.dir / e.file).read_bytes()
    assert bg.rounds("global") == [2, 3, 6] and bg.verify() == []


def test_background_store_owns_what_it_was_given(tmp_path):
    store = SnapshotStore(tmp_path, background=True)
    arrays = _arrays(1.0)
    store.put(1, None, "global", arrays)
    arrays["w"][:] = 99.0  # the caller reuses its buffer before the write happened
    np.testing.assert_array_equal(store.get(1, None, "global")["w"], _arrays(1.0)["w"])


def test_closing_a_background_store_writes_everything_and_stops_its_thread(tmp_path):
    import threading

    store = SnapshotStore(tmp_path, background=True)
    store.put(1, None, "global", _arrays(1.0))
    store.close()
    assert store.rounds("global") == [1]
    assert not any(t.name == f"snapshots-{tmp_path.name}" and t.is_alive() for t in threading.enumerate())
    assert store.put(2, None, "global", _arrays(2.0)) is not None  # synchronous from now on
