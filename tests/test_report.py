"""Reports: every figure drawn and decodable, report.html standalone (images embedded,
the dataset named), rebuilt by ``fl-sim report`` from the saved results alone, failures
never silent, comparison reports, and progress that does not spam a non-terminal."""

import io
import json
import logging
import re
import shutil

import numpy as np
import pytest
from matplotlib.image import imread

from attacks.base import MembershipAttack
from attacks.metrics import choose_threshold
from fl_sim import catalog
from fl_sim.cli import main
from fl_sim.compare import epochs_table
from fl_sim.experiment import report_or_warn, run_experiment
from fl_sim.report import regenerate
from fl_sim.report.comparison import COMPARISON_FIGURES, parse_epoch_table
from fl_sim.report.progress import Progress, progress_mode, run_log
from fl_sim.report.run_report import RUN_FIGURES
from tests.conftest import tiny_config

REPORT_FILES = ("report.md", "report.html", "tables/target.csv", "tables/attacks.csv")


def check_figures(run_dir, names):
    """Every named figure exists and decodes as a PNG of a real size; returns their count."""
    for name in names:
        path = run_dir / "figures" / f"{name}.png"
        assert path.is_file(), path
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        assert path.stat().st_size > 5_000, path
        img = imread(path)
        assert img.ndim == 3 and img.shape[0] >= 300 and img.shape[1] >= 300, (path, img.shape)
        assert np.ptp(img[..., :3]) > 0.5, f"{path} is blank"
    return len(names)


def check_html(run_dir, n_images, display_name):
    html = (run_dir / "report.html").read_text()
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(embedded) == n_images
    assert all(len(b) > 5_000 for b in embedded)
    assert display_name in html
    assert not re.search(r'(src|href)="(https?:)?//', html), "the page must not fetch anything"
    return html


class ToyLoss(MembershipAttack):
    """Minus the last snapshot's loss, registered from outside the report code."""

    def fit(self, features, is_member=None):
        self.threshold_ = choose_threshold(self.score_samples(features), is_member)
        return self

    def score_samples(self, features):
        return -np.asarray(features[-1].loss, dtype=np.float64)


@pytest.fixture(scope="module")
def standalone_run(tmp_path_factory):
    """A tiny stand-alone run (no Ray) with a supervised, an unsupervised and a toy attack."""
    catalog.register(catalog.Scenario("toy_report_loss", modes=("standalone",), observer="target",
                                      targets="target", attack=lambda cfg, seed: ToyLoss(),
                                      defenses=("none",), summary="a toy registered by the test"))
    try:
        cfg = tiny_config(federation__mode="standalone", federation__participants=1, federation__rounds=4,
                          data__records_per_participant=200, attack__epochs=[2, 3, 4],
                          attack__epochs_attack_model=5,
                          attack__names=["standalone_whitebox", "standalone_unsupervised", "toy_report_loss"])
        out = tmp_path_factory.mktemp("report") / "run"
        results = run_experiment(cfg, out, progress=False)
        yield out, results
    finally:
        catalog.unregister("toy_report_loss")


def test_every_figure_is_a_png_and_the_html_embeds_them(standalone_run):
    out, results = standalone_run
    assert "report_error" not in results
    n = check_figures(out, [s.name for s in RUN_FIGURES])  # an unsupervised attack ran: all of them
    html = check_html(out, n, "scikit-learn digits (8x8)")
    md = (out / "report.md").read_text()
    for f in RUN_FIGURES:
        assert f"figures/{f.name}.png" in md
    # a newly registered attack reaches the tables (with its catalog summary) and the figures
    assert "toy_report_loss" in md and "a toy registered by the test" in html
    data = json.loads((out / "figure_data.json").read_text())
    toy = data["attacks"]["toy_report_loss"]["evaluations"][0]
    toy_result = results["attacks"][2]
    assert len(toy["scores"]) == len(toy["labels"]) == toy_result["n_members"] + toy_result["n_nonmembers"]
    assert toy["snapshots"] == [2, 3, 4] and len(toy["grad_norm"]) == 3
    rows = (out / "tables" / "attacks.csv").read_text().splitlines()
    assert rows[0].startswith("attack,accuracy,auc,tpr_at_0.1pct_fpr,tpr_at_1pct_fpr,tpr_at_10pct_fpr")
    assert [r.split(",")[0] for r in rows[1:]] == ["standalone_whitebox", "standalone_unsupervised",
                                                     "toy_report_loss"]
    assert "INFO attack standalone_whitebox" in (out / "run.log").read_text()


def test_fl_sim_report_rebuilds_without_snapshots_or_retraining(standalone_run, tmp_path, capsys):
    src, _ = standalone_run
    run = tmp_path / "copy"
    shutil.copytree(src, run, ignore=shutil.ignore_patterns("snapshots", "figures", "tables", "report.*"))
    before = (run / "results.json").read_bytes()
    assert main(["report", str(run)]) == 0
    assert "report.html" in capsys.readouterr().out
    for f in REPORT_FILES:
        assert (run / f).is_file(), f
    n = check_figures(run, [s.name for s in RUN_FIGURES])
    check_html(run, n, "scikit-learn digits (8x8)")
    assert (run / "results.json").read_bytes() == before
    assert not (run / "snapshots").exists()


def test_a_bad_run_dir_is_one_line_and_status_2(tmp_path, capsys):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("seed: 0\n")
    for target in (tmp_path / "nowhere", tmp_path / "half"):
        assert main(["report", str(target)]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "not a complete run" in lines[0] and str(target) in lines[0]
    (tmp_path / "half" / "results.json").write_text("{not json")
    assert main(["report", str(tmp_path / "half")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "does not parse" in lines[0]


def test_absent_figures_say_why(standalone_run, tmp_path):
    src, results = standalone_run
    run = tmp_path / "no-unsupervised"
    run.mkdir()
    kept = [a for a in results["attacks"] if a["name"] != "standalone_unsupervised"]
    data = json.loads((src / "figure_data.json").read_text())
    del data["attacks"]["standalone_unsupervised"]
    (run / "figure_data.json").write_text(json.dumps(data))
    (run / "results.json").write_text(json.dumps({**results, "attacks": kept}))
    (run / "figures").mkdir()
    (run / "figures" / "fig5_unsupervised_encoding.png").write_bytes(b"stale")
    regenerate(run)
    md = (run / "report.md").read_text()
    assert "Not drawn: no unsupervised attack ran" in md and "standalone_unsupervised" in md
    assert not (run / "figures" / "fig5_unsupervised_encoding.png").exists()  # no stale figure
    assert (run / "figures" / "fig6_roc_by_uncertainty.png").is_file()
    (run / "figure_data.json").unlink()  # a run from before figure data: ROC only, and why
    regenerate(run)
    md = (run / "report.md").read_text()
    assert (run / "figures" / "roc.png").is_file() and not (run / "figures" / "fig3_gradient_norm_epochs.png").exists()
    assert "no figure_data.json" in md


def test_a_report_failure_is_never_silent(standalone_run, tmp_path, monkeypatch, capsys):
    _, results = standalone_run
    import fl_sim.experiment as experiment

    def broken(run_dir, results):
        raise OSError("disk full")

    monkeypatch.setattr(experiment, "write_report", broken)
    with run_log(tmp_path):
        error = report_or_warn(tmp_path, results)
    assert error == "OSError: disk full"
    err = capsys.readouterr().err
    assert "warning: report not written (OSError: disk full)" in err and f"fl-sim report {tmp_path}" in err
    log = (tmp_path / "run.log").read_text()
    assert "Traceback" in log and "disk full" in log


def _compare_dir(tmp_path, standalone_run):
    """A comparison directory as ``fl-sim compare --epoch-sets`` leaves it, from two seeds."""
    _, results = standalone_run
    out = tmp_path / "cmp"
    names = [a["name"] for a in results["attacks"]]
    rows = []
    for k, seed in enumerate((0, 1)):
        r = json.loads(json.dumps(results))
        r["seed"] = seed
        for a in r["attacks"]:
            a["auc"] += 0.02 * k
            a["accuracy"] += 0.01 * k
        (out / f"seed-{seed}").mkdir(parents=True)
        (out / f"seed-{seed}" / "results.json").write_text(json.dumps(r))
        rows += [{"epochs": es, "attacks": [dict(a, accuracy=a["accuracy"] + 0.01 * i) for a in r["attacks"]]}
                 for i, es in enumerate(([2], [3, 4]))]
    (out / "table_epochs.md").write_text(epochs_table(rows) + "\n")
    (out / "compare.json").write_text(json.dumps({"seeds": [0, 1], "attacks": names}))
    return out


def test_comparison_report(standalone_run, tmp_path):
    out = _compare_dir(tmp_path, standalone_run)
    parsed = parse_epoch_table((out / "table_epochs.md").read_text())
    assert [r["epochs"] for r in parsed] == ["2", "3,4"]
    assert parsed[0]["toy_report_loss"][1] > 0  # a std over the two seeds was read
    kind, figures = regenerate(out)
    assert kind == "comparison" and figures == ["figures/table_x.png", "figures/table_xii_epochs.png"]
    check_figures(out, ["table_x", "table_xii_epochs"])
    md = (out / "report.md").read_text()
    assert "mean ± std over 2 seeds" in md and " ± " in md
    assert "Not drawn: every run here used the same defense" in md  # the privacy-utility hook
    assert "seed-1/report.html" in md
    check_html(out, 2, "scikit-learn digits (8x8)")
    csv = (out / "tables" / "attacks.csv").read_text().splitlines()
    assert csv[0].startswith("attack,accuracy_mean,accuracy_std,auc_mean,auc_std") and len(csv) == 4
    assert {s.name for s in COMPARISON_FIGURES} == {"table_x", "table_xii_epochs", "privacy_utility"}


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_progress_bars_only_on_a_terminal_one_line_per_stage_elsewhere(tmp_path, capsys):
    assert progress_mode(True, _Stream(True)) == "bars"
    assert progress_mode(True, _Stream(False)) == "lines"
    assert progress_mode(False, _Stream(True)) == "quiet"
    with run_log(tmp_path):
        for mode in ("lines", "quiet"):
            rounds = Progress(mode).rounds(5)
            rounds.begin("passive")
            for rnd in range(1, 6):
                rounds.tick("passive", rnd)
            rounds.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and re.fullmatch(r"fl-sim: passive rounds: 5 rounds in [\d.]+ s", err[0])
    assert (tmp_path / "run.log").read_text().count("passive rounds: 5 rounds") == 2  # logged in both modes
    assert not logging.getLogger("fl_sim").handlers  # the run's log handler is gone after the run
