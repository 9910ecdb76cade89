"""One run's report: ``report.md`` and ``report.html`` (standalone), ``figures/*.png`` and
``tables/*.csv``, drawn from ``results.json`` and ``figure_data.json`` alone (no
snapshots, no training), so ``fl-sim report RUN_DIR`` can rebuild it any time.

The figures are the entries of :data:`RUN_FIGURES`; each draws from whatever attacks the
run recorded, so a newly registered attack shows up in every figure that applies to it.
"""

from __future__ import annotations

from pathlib import Path

from fl_sim.io import atomic_write_bytes
from fl_sim.report import figdata
from fl_sim.report.document import Document, Heading, Image, Link, Paragraph, to_html, to_markdown
from fl_sim.report.gradients import fig3, fig4
from fl_sim.report.plotting import FigureSpec, RunView, save_png
from fl_sim.report.roc import roc_linear, roc_loglog, target_accuracy
from fl_sim.report.scores import MAX_PANELS, fig5, fig6
from fl_sim.report.summary import verdict
from fl_sim.report.tables import attack_table, pct, target_table, victim_table, write_csv

RUN_FIGURES = [
    FigureSpec("roc", "ROC curves", "One curve per attack; linear axes.", roc_linear),
    FigureSpec("roc_loglog", "ROC curves, log-log", "The low-FPR region from FPR 1e-4, where a "
               "membership attack must be judged (Carlini et al. 2022).", roc_loglog),
    FigureSpec("target_accuracy", "Target accuracy", "Train and test accuracy of every training "
               "the run made (the passive federation is the target).", target_accuracy),
    FigureSpec("fig3_gradient_norm_epochs", "Fig. 3: last-layer gradient norm across epochs",
               "Mean norm of the last layer's weight gradient over the evaluation records at each "
               "observed epoch, members against non-members (error bars: standard error).", fig3),
    FigureSpec("fig4_gradient_norm_distribution", "Fig. 4: distribution of gradient norms",
               "The last layer's weight-gradient norm of every evaluation record at the last "
               "observed epoch.", fig4),
    FigureSpec("fig5_unsupervised_encoding", "Fig. 5: the unsupervised attack's encoded values",
               "The scalar code of the unsupervised encoder for members and non-members.", fig5),
    FigureSpec("fig6_roc_by_uncertainty", "Fig. 6: ROC by class prediction uncertainty",
               "Classes ranked by the mean prediction entropy of their records under the last "
               "observed model and cut in three groups; ROC of each group averaged over the "
               f"attacked participants (first {MAX_PANELS} attacks).", fig6),
]


def draw_figures(out_dir: Path, view, specs: list[FigureSpec]) -> list[tuple[FigureSpec, str | None]]:
    """Draw ``specs`` into ``out_dir/figures``: (spec, None) for a drawn figure, (spec,
    reason) for an absent one, whose stale PNG from an earlier report is removed."""
    fig_dir = Path(out_dir) / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for spec in specs:
        fig = spec.draw(view)
        path = fig_dir / f"{spec.name}.png"
        if isinstance(fig, str):
            path.unlink(missing_ok=True)
            done.append((spec, fig))
            continue
        save_png(fig, path)
        done.append((spec, None))
    return done


def figure_blocks(drawn: list[tuple[FigureSpec, str | None]]) -> list:
    blocks = [Heading("Figures")]
    for spec, absent in drawn:
        blocks.append(Heading(spec.title, 3))
        blocks.append(Paragraph(f"Not drawn: {absent}.") if absent else
                      Image(f"figures/{spec.name}.png", spec.caption, spec.title))
    return blocks


def write_documents(out_dir: Path, doc: Document) -> None:
    """``report.md`` and the standalone ``report.html`` of ``doc`` into ``out_dir``."""
    atomic_write_bytes(Path(out_dir) / "report.md", to_markdown(doc).encode())
    atomic_write_bytes(Path(out_dir) / "report.html", to_html(doc, Path(out_dir)).encode())


def _notes(results: dict) -> list[str]:
    out = [f"{a['name']}: {n}" for a in results.get("attacks", []) for n in a.get("notes", [])]
    out += [f"participant {f['participant']} failed in round {f['round']} ({f.get('setting')}): "
            f"{f.get('reason')}" for f in results.get("failures", [])]
    return out


def run_document(results: dict, drawn) -> tuple[Document, dict[str, list]]:
    """The report of one run and its CSV tables (file stem -> rows)."""
    view = RunView(results, None)
    doc = Document(f"Run report: {view.label}, seed {results['seed']}")
    t = results.get("timing", {})
    doc.add(Paragraph(f"Dataset: {results.get('dataset_display_name', results['dataset'])} "
                      f"({results['dataset']}); model: {results['model']}; mode: {results.get('mode', '?')}; "
                      f"target train accuracy {pct(results['target'].get('train_acc'))} %, test accuracy "
                      f"{pct(results['target'].get('test_acc'))} %; total time {t.get('total_s', 0):.0f} s."))
    target, target_csv = target_table(results)
    attacks, attacks_csv = attack_table(results)
    doc.add(Heading("Target model"), target, Heading("Attacks"), attacks)
    if (v := victim_table(results)) is not None:
        doc.add(v)
    if (line := verdict(results.get("attacks", []))) is not None:
        doc.add(Paragraph(line))
    if notes := _notes(results):
        doc.add(Heading("Notes"), *(Paragraph(n) for n in notes))
    doc.add(*figure_blocks(drawn))
    doc.add(Heading("Files"), Link("results.json (every number, ROC points)", "results.json"),
            Link("tables/target.csv", "tables/target.csv"), Link("tables/attacks.csv", "tables/attacks.csv"))
    return doc, {"target": target_csv, "attacks": attacks_csv}


def write_run_report(run_dir: Path, results: dict) -> list[str]:
    """Write the report of the run in ``run_dir`` from ``results`` (its results.json) and
    its figure data; returns the figure files drawn (relative paths)."""
    run_dir = Path(run_dir)
    view = RunView(results, figdata.load(run_dir))
    drawn = draw_figures(run_dir, view, RUN_FIGURES)
    doc, tables = run_document(results, drawn)
    for stem, rows in tables.items():
        write_csv(run_dir / "tables" / f"{stem}.csv", rows)
    write_documents(run_dir, doc)
    return [f"figures/{spec.name}.png" for spec, absent in drawn if absent is None]
