"""Run directories: fl-sim marks what it creates, --overwrite replaces only that, labels
become single safe path components, and a complete run advises nothing."""

import pytest

from fl_sim.errors import FlSimError
from fl_sim.io import read_json
from fl_sim.rundir import MARKER, prepare_run_dir, safe_name, set_status


def test_overwrite_replaces_a_directory_fl_sim_made_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = prepare_run_dir(tmp_path / "runs" / "a")
    assert (run / MARKER).is_file()
    (run / "results.json").write_text("{}")
    with pytest.raises(FlSimError, match="--overwrite"):
        prepare_run_dir(run)
    prepare_run_dir(run, overwrite=True)
    assert not (run / "results.json").exists() and (run / MARKER).is_file()
    # the same directory with the marker removed is no longer fl-sim's to delete
    (run / MARKER).unlink()
    (run / "mine.txt").write_text("x")
    with pytest.raises(FlSimError, match="not a directory fl-sim created"):
        prepare_run_dir(run, overwrite=True)
    assert (run / "mine.txt").is_file()
    # a marker planted in the working directory does not make it deletable
    (tmp_path / MARKER).write_text("{}")
    with pytest.raises(FlSimError, match="refusing"):
        prepare_run_dir(tmp_path, overwrite=True)
    assert (run / "mine.txt").is_file()


def test_a_symbolic_link_to_a_run_is_not_followed(tmp_path):
    run = prepare_run_dir(tmp_path / "run")
    (run / "results.json").write_text("{}")
    link = tmp_path / "link"
    link.symlink_to(run, target_is_directory=True)
    with pytest.raises(FlSimError, match="symbolic link"):
        prepare_run_dir(link, overwrite=True)
    assert (run / "results.json").is_file()


@pytest.mark.parametrize("label", ["..", ".", "", "../../x", "/etc/passwd", "a/b", ".hidden", "x" * 500,
                                   "dp_sgd:noise_multiplier=0.5", "attack.isolate_rounds=[23,24]"])
def test_labels_become_one_safe_path_component(tmp_path, label):
    name = safe_name(label)
    assert "/" not in name and name not in ("", ".", "..") and not name.startswith(".")
    assert len(name) <= 121
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_a_complete_run_advises_nothing(tmp_path):
    set_status(tmp_path, state="trained", next="fl-sim run --resume x")
    assert read_json(tmp_path / "status.json")["next"]
    set_status(tmp_path, state="complete")
    assert "next" not in read_json(tmp_path / "status.json")
