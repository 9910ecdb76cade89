"""The report of a real (tiny) federated run, as a user gets it from ``fl-sim run`` with
stderr not a terminal: every figure a PNG, the HTML standalone and naming the dataset, one
progress line per stage, and ``fl-sim report`` rebuilding it all after the snapshots
are gone."""

import json
import shutil

import pytest

from fl_sim.cli import main
from fl_sim.report.run_report import RUN_FIGURES
from tests.test_cli import fl_sim
from tests.test_report import REPORT_FILES, check_figures, check_html

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

TINY = ["--set", "data.records_per_participant=30", "--set", "model.options.widths=[16]",
        "--set", "federation.batch_size=8", "--set", "federation.rounds=2", "--set", "attack.epochs=[1,2]",
        "--set", "attack.epochs_attack_model=5",
        "--set", "attack.names=[global_passive,global_unsupervised,local_passive]"]


def test_a_federated_run_reports_every_figure_and_rebuilds_it(tmp_path, capsys):
    out = tmp_path / "run"
    # the command's own main, in this process (its federation reuses the suite's Ray
    # actors; tests/test_cli.py runs the entry point as a subprocess)
    assert main(["run", "--out", str(out), *TINY]) == 0
    p = capsys.readouterr()
    assert f"report: {out / 'report.html'}" in p.out
    # stderr is not a terminal here: one line per stage, never a redrawn bar
    assert "\r" not in p.err
    lines = [ln for ln in p.err.splitlines() if ln.startswith("fl-sim: ")]
    assert "fl-sim: passive rounds: 2 rounds in" in p.err
    assert sum(ln.startswith("fl-sim: attack ") for ln in lines) == 3
    for f in ("results.json", "figure_data.json", "run.log", *REPORT_FILES):
        assert (out / f).is_file(), f
    display = json.loads((out / "results.json").read_text())["dataset_display_name"]
    n = check_figures(out, [s.name for s in RUN_FIGURES])
    check_html(out, n, display)
    data = json.loads((out / "figure_data.json").read_text())
    passive = data["attacks"]["global_passive"]
    assert passive["training"] == "passive" and len(passive["evaluations"]) == 4  # one per participant
    assert all(ev["snapshots"] == [1, 2] for ev in passive["evaluations"])
    assert data["attacks"]["global_unsupervised"]["attack_model"] == "unsupervised"

    # fl-sim report: the same figures from the saved results, the snapshots deleted
    html_before = (out / "report.html").read_text()
    shutil.rmtree(out / "snapshots")
    shutil.rmtree(out / "figures")
    for f in REPORT_FILES:
        (out / f).unlink()
    again = fl_sim("report", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert check_figures(out, [s.name for s in RUN_FIGURES]) == n
    assert check_html(out, n, display) == html_before  # drawn from the same data, byte for byte
