"""The snapshot store survives crashes and full disks; what a run directory names stays inside
it; pickled data files are read only when their checksum is known."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fl_sim.errors import DataError, RunDirError, SnapshotError
from fl_sim.snapshots import SnapshotStore
from tests.conftest import REPO, tiny_config


def _arrays(v, n: int = 3):
    return {"w": np.full((n, 2), v, np.float32), "b": np.arange(3, dtype=np.float32)}


def _one_line(e: pytest.ExceptionInfo, *parts: str) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    for p in parts:
        assert p in msg, (p, msg)
    return msg


def _federation_rounds(store: SnapshotStore, rounds: range) -> None:
    """What the aggregator stores: two uploads (kept rounds only), the aggregate, the roll."""
    for rnd in rounds:
        for pid in range(2):
            store.put(rnd, pid, "upload", _arrays(10 * rnd + pid), num_examples=5)
        store.put(rnd, None, "global", _arrays(rnd), force=True)
        store.roll(rnd - 1)


# ------------------------------------------------------------------ operating-system crash
@pytest.mark.parametrize("damage", [b"", b"\0" * 4096, b'{"entries": [{"round": 3, "par'])
def test_an_index_a_crash_left_empty_or_garbled_is_rebuilt_from_the_files(tmp_path, damage):
    s = SnapshotStore(tmp_path, keep_rounds=[2])
    _federation_rounds(s, range(1, 5))
    SnapshotStore(tmp_path, writer="p1").put(2, 1, "received", _arrays(7.0))
    before = SnapshotStore(tmp_path).entries()
    assert {e.role for e in before} == {"global", "upload", "received"}
    (tmp_path / "index.json").write_bytes(damage)
    (tmp_path / "index.p1.json").write_bytes(damage)
    rebuilt = SnapshotStore(tmp_path, keep_rounds=[2])
    assert rebuilt.entries() == before  # example counts included: the files carry them
    assert rebuilt.find(2, 0, "upload").num_examples == 5
    rebuilt.recover()  # a resume writes the rebuilt index back
    assert json.loads((tmp_path / "index.json").read_text())["entries"]
    assert SnapshotStore(tmp_path).entries() == before and rebuilt.verify() == []


def test_a_snapshot_a_crash_left_empty_is_left_out_and_the_resume_takes_the_round_before(tmp_path):
    from fl_sim.federated import resume_point
    from fl_sim.target import initial_arrays, load_data

    cfg = tiny_config(federation__keep_rounds="all", federation__rounds=5)
    data = load_data(cfg)
    store = SnapshotStore(tmp_path / "s")

    def aggregate(rnd):
        return {k: v + rnd for k, v in initial_arrays(cfg, data).items()}

    for rnd in (1, 2, 3):
        store.put(rnd, None, "global", aggregate(rnd))
    (store.dir / "r0003-server-global.safetensors").write_bytes(b"")   # its data never reached the disk
    (store.dir / "index.json").write_bytes(b"")                       # nor the index's
    resume = resume_point(cfg, data, SnapshotStore(store.dir), store.dir / "failures.json")
    assert resume.start == 2
    for k, v in aggregate(2).items():
        np.testing.assert_array_equal(resume.init[k], v)
    after = SnapshotStore(store.dir)
    assert after.rounds("global") == [1, 2] and after.verify() == []
    assert after.find(3, None, "global") is None   # round 3 is trained again, replacing the file


def test_an_index_never_written_is_rebuilt_when_resuming(tmp_path):
    s = SnapshotStore(tmp_path, keep_rounds=[1])
    _federation_rounds(s, range(1, 4))
    before = s.entries()
    (tmp_path / "index.json").unlink()   # a crash before the first index reached the disk
    s = SnapshotStore(tmp_path, keep_rounds=[1])
    assert s.entries() == []
    s.recover()
    assert s.entries() == before


# ------------------------------------------------------------------ full disk
_FULL_DISK = r'''
import json, resource, signal, sys
import numpy as np
from fl_sim.errors import SnapshotError
from fl_sim.snapshots import SnapshotStore

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit then fails with EFBIG
big = lambda v: {"w": np.full((64, 64), v, np.float32)}   # 16 KiB: over the limit set below
tiny = lambda v: {"w": np.full((1,), v, np.float32)}      # well under it
store = SnapshotStore(sys.argv[1], keep_rounds=[1], background=True)
for rnd in (1, 2, 3):
    store.put(rnd, None, "global", big(rnd), force=True)
    store.roll(rnd - 1)
store.flush()
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
out = {"errors": []}
for call in (lambda: store.put(4, None, "global", big(4), force=True),  # fails
             lambda: store.put(4, 0, "upload", tiny(4), force=True),    # would fit: must not be written
             lambda: store.roll(3),                                      # would forget round 3: must not run
             store.flush):
    try:
        call()
    except SnapshotError as e:
        out["errors"].append(f"{type(e).__name__}: {e}")
for name, call in (("put", lambda: store.put(5, 0, "upload", tiny(5), force=True)),
                   ("roll", lambda: store.roll(4)), ("flush", store.flush)):
    try:
        call()
        out[name] = None
    except SnapshotError as e:
        out[name] = str(e)
try:
    try:
        raise RuntimeError("the round failed")
    finally:
        store.close()
except Exception as e:
    out["finally"] = f"{type(e).__name__}: {e}"
try:
    store.close()
    out["close"] = None
except SnapshotError as e:
    out["close"] = str(e)
try:
    SnapshotStore(sys.argv[1] + "-sync").put(1, None, "global", big(1))
    out["sync"] = None
except SnapshotError as e:
    out["sync"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
'''


def _python(*args: str, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300, **kw)


def test_a_full_disk_stops_the_store_in_one_line_and_leaves_it_resumable(tmp_path):
    # a real limit: RLIMIT_FSIZE in a child process, whose writes past 4 KiB fail with EFBIG
    done = _python("-c", _FULL_DISK, str(tmp_path / "s"))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out["errors"] and out["errors"][-1].startswith("SnapshotWriteError")  # flush at the latest
    for msg in out["errors"] + [out["put"], out["roll"], out["flush"], out["close"]]:
        assert msg is not None and "File too large" in msg and "\n" not in msg, msg
        assert "fl-sim run --resume" in msg
    assert out["finally"] == "RuntimeError: the round failed"   # close() did not replace it
    assert out["sync"].startswith("SnapshotWriteError: writing snapshot") and "File too large" in out["sync"]
    # nothing queued behind the failure was written; the store is what it was after round 3
    s = SnapshotStore(tmp_path / "s", keep_rounds=[1])
    assert s.rounds("global") == [1, 3] and s.find(4, 0, "upload") is None
    assert sorted(p.name for p in s.dir.iterdir()) == [
        "index.json", "r0001-server-global.safetensors", "r0003-server-global.safetensors"]
    assert s.verify() == []
    s.drop_after(3)   # what a resume does, then the rounds go on
    s.put(4, None, "global", {"w": np.zeros((64, 64), np.float32)}, force=True)
    s.roll(3)
    assert s.rounds("global") == [1, 4]


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-m", "fl_sim.cli", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _kill_group(proc: subprocess.Popen) -> None:
    """The Ray processes the run started (its own session) once it is over."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


RUN = ["--set", "data.records_per_participant=30", "--set", "model.options.widths=[2048]",
       "--set", "federation.batch_size=8", "--set", "federation.rounds=40",
       "--set", "federation.num_cpus=0.5", "--set", "attack.names=[global_compact]",
       "--set", "attack.epochs=[40]", "--set", "attack.epochs_attack_model=5", "--no-progress"]


@pytest.mark.ray
@pytest.mark.timeout(900)
def test_a_run_stopped_by_a_full_disk_says_so_in_one_line_and_resumes_once_there_is_space(tmp_path):
    run = tmp_path / "run"
    proc = _cli("run", "--out", str(run), *RUN, start_new_session=True)
    try:
        index = run / "snapshots" / "passive" / "index.json"
        deadline = time.time() + 400
        while time.time() < deadline:
            if index.exists() and max(SnapshotStore(index.parent).rounds("global"), default=0) >= 2:
                break
            if proc.poll() is not None:
                pytest.fail("run ended before the limit was set: " + proc.stderr.read()[-2000:])
            time.sleep(0.02)
        # the disk is "full" for the run's process from now on: a 610 KB aggregate no longer fits (its
        # other files, Ray's driver log among them, stay under 256 KB)
        # lowering a limit of one's own child needs no privilege on Linux
        hard = resource.prlimit(proc.pid, resource.RLIMIT_FSIZE)[1]
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (256 * 1024, hard))
        out, err = proc.communicate(timeout=400)
    finally:
        _kill_group(proc)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    assert lines[0].startswith("fl-sim: error: the run stopped: writing snapshot") and "File too large" in lines[0]
    store = SnapshotStore(index.parent)
    stopped_at = max(store.rounds("global"))
    assert 2 <= stopped_at < 40 and store.verify() == [] and not (run / "results.json").exists()

    resumed = _cli("run", "--resume", str(run), start_new_session=True)
    try:
        _, err = resumed.communicate(timeout=600)
    finally:
        _kill_group(resumed)
    assert resumed.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    store = SnapshotStore(index.parent)
    assert max(store.rounds("global")) == 40 and store.verify() == []
    assert json.loads((run / "results.json").read_text())["attacks"]


# ------------------------------------------------------------------ index entries
GOOD = {"round": 3, "participant": 1, "role": "upload", "file": "r0003-p1-upload.safetensors",
        "sha256": "0" * 64, "bytes": 10, "num_examples": 5}


@pytest.mark.parametrize("change, why", [
    ({"round": None}, "round is None"),
    ({"round": "3"}, "round is '3'"),
    ({"round": True}, "round is True"),
    ({"participant": -1}, "participant is -1"),
    ({"role": "evil"}, "role 'evil'"),
    ({"file": "../../outside.safetensors"}, "file '../../outside.safetensors' is not r0003-p1-upload"),
    ({"file": "/etc/passwd"}, "file '/etc/passwd'"),
    ({"file": "r0004-p1-upload.safetensors"}, "is not r0003-p1-upload"),
    ({"sha256": "xyz"}, "sha256 'xyz'"),
    ({"bytes": 1.5}, "bytes is 1.5"),
    ({"extra": 1}, "unknown keys extra"),
    ({"sha256": None, "drop": "sha256"}, "no sha256"),
])
def test_a_bad_index_entry_is_one_line_naming_the_index(tmp_path, change, why):
    entry = {**GOOD, **change}
    if "drop" in change:
        entry.pop("drop")
        entry.pop(change["drop"])
    (tmp_path / "index.json").write_text(json.dumps({"entries": [entry]}))
    with pytest.raises(SnapshotError) as e:
        SnapshotStore(tmp_path).entries()
    _one_line(e, str(tmp_path / "index.json"), why)


@pytest.mark.parametrize("doc", [[], {"entries": {}}, {"entries": [1]}, {"nope": []}])
def test_an_index_that_is_not_fl_sims_is_one_line(tmp_path, doc):
    (tmp_path / "index.json").write_text(json.dumps(doc))
    with pytest.raises(SnapshotError) as e:
        SnapshotStore(tmp_path).rounds()
    _one_line(e, str(tmp_path / "index.json"))


def _store_with_victim_outside(tmp_path) -> tuple[SnapshotStore, Path]:
    store = SnapshotStore(tmp_path / "run" / "snapshots" / "passive")
    entry = store.put(3, 1, "upload", _arrays(1.0))
    victim = tmp_path / "victim.safetensors"
    victim.write_bytes((store.dir / entry.file).read_bytes())
    return store, victim


def test_drop_after_never_deletes_outside_the_store(tmp_path):
    store, victim = _store_with_victim_outside(tmp_path)
    index = store.dir / "index.json"
    doc = json.loads(index.read_text())
    doc["entries"][0]["file"] = "../../../victim.safetensors"
    index.write_text(json.dumps(doc))
    with pytest.raises(SnapshotError) as e:
        SnapshotStore(store.dir).drop_after(1)
    _one_line(e, "index.json")
    assert victim.exists()
    # a snapshot name that is a link to a file outside: not read, and only the link is removed
    index.write_text(json.dumps({**doc, "entries": [{**doc["entries"][0], "file": "r0003-p1-upload.safetensors"}]}))
    (store.dir / "r0003-p1-upload.safetensors").unlink()
    (store.dir / "r0003-p1-upload.safetensors").symlink_to(victim)
    with pytest.raises(SnapshotError) as e:
        SnapshotStore(store.dir).get(3, 1, "upload")
    _one_line(e, "leads out of")
    SnapshotStore(store.dir).drop_after(1)
    assert victim.exists() and not (store.dir / "r0003-p1-upload.safetensors").is_symlink()


def test_a_store_or_index_linked_out_of_the_run_directory_is_refused(tmp_path):
    store, _ = _store_with_victim_outside(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "index.json").write_text((store.dir / "index.json").read_text())
    (store.dir / "index.json").unlink()
    (store.dir / "index.json").symlink_to(elsewhere / "index.json")
    with pytest.raises(SnapshotError) as e:
        SnapshotStore(store.dir).entries()
    _one_line(e, "leads out of")
    run = tmp_path / "run"
    (run / "snapshots" / "linked").symlink_to(elsewhere)
    with pytest.raises(SnapshotError) as e:
        SnapshotStore(run / "snapshots" / "linked", within=run)
    _one_line(e, "leads out of the run directory")


def _crafted_run(tmp_path, complete: bool) -> tuple[Path, Path]:
    """A run directory from elsewhere whose index names a file outside it."""
    from fl_sim.config import dump_config
    from fl_sim.target import load_data, make_run_split

    cfg = tiny_config(attack__names=["global_compact"], attack__epochs=[2])
    run = tmp_path / "received"
    (run / "snapshots" / "passive").mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(cfg))
    make_run_split(cfg, len(load_data(cfg).y)).save(run / "split.json")
    if complete:
        (run / "results.json").write_text(json.dumps({"target": {}}))
    victim = tmp_path / "victim.safetensors"
    victim.write_bytes(b"not yours")
    entry = {**GOOD, "round": 2, "participant": None, "role": "global",
             "file": "../../../victim.safetensors", "sha256": hashlib.sha256(b"not yours").hexdigest()}
    (run / "snapshots" / "passive" / "index.json").write_text(json.dumps({"entries": [entry]}))
    return run, victim


@pytest.mark.parametrize("command", ["attack", "resume"])
def test_a_crafted_run_directory_is_one_line_and_nothing_outside_is_touched(tmp_path, capsys, command):
    from fl_sim.cli import main

    run, victim = _crafted_run(tmp_path, complete=command == "attack")
    argv = ["attack", str(run)] if command == "attack" else ["run", "--resume", str(run), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "index.json has an entry fl-sim did not write" in err, err
    assert victim.read_bytes() == b"not yours"


# ------------------------------------------------------------------ plans and messages
def _run_with_plan(tmp_path, **change) -> Path:
    from fl_sim.plan import ClientPlan

    run = tmp_path / "run"
    (run / "plans").mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")
    fields = dict(store_dir=str(run / "snapshots" / "passive"), x_path=str(run / "data" / "x.npy"),
                  y_path=str(run / "data" / "y.npy"), input_shape=[8], num_classes=2, model_name="fc",
                  model_options={}, train=[[0]], local_epochs=1, batch_size=1, lr=0.1, momentum=0.0,
                  weight_decay=0.0, seed=0, threads=1)
    ClientPlan(**{**fields, **change}).save(run / "plans" / "passive.json")
    return run


@pytest.mark.parametrize("name", ["../passive", "/etc/passwd", "a/b", "..", ".hidden", "", "x\0y"])
def test_a_plan_name_must_be_a_plain_name(tmp_path, name):
    from fl_sim.plan import plan_files

    with pytest.raises(RunDirError) as e:
        plan_files(tmp_path, name)
    _one_line(e, "plan name")


@pytest.mark.parametrize("change, why", [
    ({"store_dir": "TMP/elsewhere"}, "elsewhere' leads out of the run directory"),
    ({"store_dir": "RUN/../outside"}, "leads out of the run directory"),
    ({"x_path": "/etc/hosts"}, "x_path '/etc/hosts' is not a .npy file in the run directory"),
    ({"y_path": "RUN/y.pkl"}, "y_path"),
])
def test_a_plan_naming_a_path_outside_the_run_directory_is_refused(tmp_path, change, why):
    from fl_sim.plan import ClientPlan

    run = tmp_path / "run"
    run_paths = {k: v.replace("RUN", str(run)).replace("TMP", str(tmp_path)) for k, v in change.items()}
    _run_with_plan(tmp_path, **run_paths)
    with pytest.raises(RunDirError) as e:
        ClientPlan.load(run / "plans" / "passive.json")
    _one_line(e, why)


def test_plans_linked_out_of_the_run_directory_are_refused(tmp_path):
    from fl_sim.plan import ClientPlan

    run = _run_with_plan(tmp_path)
    ClientPlan.load(run / "plans" / "passive.json")   # the plan as fl-sim writes it is fine
    (run / "plans").rename(tmp_path / "elsewhere")
    (run / "plans").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RunDirError) as e:
        ClientPlan.load(run / "plans" / "passive.json")
    _one_line(e, "leads out of the run directory")
    (tmp_path / "elsewhere" / "bad.json").write_text('{"store_dir": 1}')
    with pytest.raises(RunDirError) as e:
        ClientPlan.load(tmp_path / "elsewhere" / "bad.json", tmp_path / "elsewhere")
    _one_line(e, "is not fl-sim's (no x_path")


def test_the_plans_fl_sim_writes_name_data_inside_the_run_directory_linked_from_the_cache(tmp_path):
    from fl_sim.catalog import TRAININGS
    from fl_sim.federated import write_plans
    from fl_sim.plan import ClientPlan
    from fl_sim.target import load_data, make_run_split

    cfg = tiny_config()
    data = load_data(cfg)
    run = tmp_path / "run"
    plan_path, _ = write_plans(cfg, TRAININGS["passive"], data, make_run_split(cfg, len(data.y)), run, "passive")
    plan = ClientPlan.load(plan_path)
    for mine, cached in ((plan.x_path, data.x_path), (plan.y_path, data.y_path)):
        assert Path(mine).parent == run / "data"
        assert os.stat(mine).st_ino == os.stat(cached).st_ino   # a hard link: no space, the same pages
    # a data file linked out of the run directory is refused
    link = run / "data" / "elsewhere.npy"
    link.symlink_to(data.x_path)
    ClientPlan(**{**vars(plan), "x_path": str(link)}).save(plan_path)
    with pytest.raises(RunDirError) as e:
        ClientPlan.load(plan_path)
    _one_line(e, "x_path", "is not a .npy file in the run directory")


def _train_message(run_dir: str, plan: str):
    from flwr.app import ConfigRecord, Message, Metadata, RecordDict

    from fl_sim.records import PLAN_KEY, RUN_DIR_KEY

    return Message(content=RecordDict({"config": ConfigRecord({RUN_DIR_KEY: run_dir, PLAN_KEY: plan})}),
                   metadata=Metadata(run_id=1, message_id="m", src_node_id=0, dst_node_id=1, reply_to_message_id="",
                                     group_id="1", created_at=0.0, ttl=600.0, message_type="train"))


def _context(**node_config):
    from flwr.app import Context, RecordDict

    return Context(run_id=1, node_id=1, node_config={"partition-id": 0, **node_config}, state=RecordDict(),
                   run_config={})


def test_a_participant_reads_only_plans_inside_the_run_directory_its_message_names(tmp_path):
    from clients.participant import plan_of_message

    run = _run_with_plan(tmp_path)
    assert plan_of_message(_train_message(str(run), "passive"), _context()) == (run / "plans" / "passive.json", {})
    refused = [
        ((str(run), "../../etc/passwd"), {}, "plan name"),
        (("relative/run", "passive"), {}, "not an absolute path"),
        ((str(tmp_path), "passive"), {}, "not an fl-sim run directory"),
        ((str(run), "passive"), {"run-root": str(tmp_path / "runs")}, "not inside this node's run-root"),
    ]
    for (run_dir, plan), node, why in refused:
        with pytest.raises(RunDirError) as e:
            plan_of_message(_train_message(run_dir, plan), _context(**node))
        _one_line(e, why)
    assert plan_of_message(_train_message(str(run), "passive"), _context(**{"run-root": str(tmp_path)}))
    _run_with_plan(tmp_path / "b", store_dir=str(tmp_path))
    with pytest.raises(RunDirError) as e:
        plan_of_message(_train_message(str(tmp_path / "b" / "run"), "passive"), _context())
    _one_line(e, f"store_dir '{tmp_path}' leads out of the run directory")


# ------------------------------------------------------------------ pickled data files
class _Payload:
    """Unpickling this calls open(path, "w"): what any pickle can do, and worse."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_nobody_vouched_for_is_never_unpickled(tmp_path, monkeypatch):
    from fl_sim.data import load_dataset
    from tests.data_formats import vouch_for, write_cifar10

    monkeypatch.setenv("FL_SIM_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    write_cifar10(root, per_batch=2)
    batches = root / "cifar-10-batches-py"
    sums = vouch_for(batches, tmp_path / "trusted.sha256")   # the files as they were written
    ran = tmp_path / "the-pickle-ran"
    (batches / "data_batch_2").write_bytes(pickle.dumps({"data": _Payload(ran)}, protocol=2))
    monkeypatch.setenv("FL_SIM_TRUSTED_SHA256", str(sums))
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", root)
    _one_line(e, "data_batch_2 is a pickle", "not the official file", "FL_SIM_TRUSTED_SHA256")
    assert not ran.exists()
    # the same data set with the check "off" in its options (as a received config.yaml may say)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", root, verify_md5=False)
    _one_line(e, "verify_md5=False", "cannot be turned off")
    assert not ran.exists()
    # the payload is real: vouched for, it runs (which is why nothing else may vouch)
    vouch_for(batches, sums)
    with pytest.raises(DataError):
        load_dataset("cifar10", root)
    assert ran.exists()


def test_an_official_file_is_read_by_its_md5_without_vouching(tmp_path, monkeypatch):
    from fl_sim.data.pickles import trusted_pickle

    monkeypatch.delenv("FL_SIM_TRUSTED_SHA256", raising=False)
    f = tmp_path / "batches.meta"
    f.write_bytes(pickle.dumps({"label_names": ["a", "b"]}, protocol=2))
    md5 = hashlib.md5(f.read_bytes()).hexdigest()   # as torchvision lists it for the real file

    def err(problem):
        return DataError(problem)

    assert trusted_pickle(f, md5, err) == {"label_names": ["a", "b"]}
    with pytest.raises(DataError, match="not the official file"):
        trusted_pickle(f, "0" * 32, err)
