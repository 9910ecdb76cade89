"""The report of an ``fl-sim compare`` directory (``compare.json``, ``seed-<k>/``): the
tables over seeds (mean ± std), the Table X layout with error bars, the Table XII
epoch-set study when ``--epoch-sets`` was given, and the privacy-utility plot once the
directory holds runs under several defense settings. Drawn from the seeds'
``results.json`` and compare's own tables, never from snapshots.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from fl_sim.errors import FlSimError
from fl_sim.io import read_json
from fl_sim.report.document import Document, Heading, Link, Paragraph, Table
from fl_sim.report.plotting import FigureSpec, grid, new_figure
from fl_sim.report.run_report import draw_figures, figure_blocks, write_documents
from fl_sim.report.summary import on_victim
from fl_sim.report.tables import mean_std, metric_values, seed_attack_table, seed_target_table, write_csv

_CELL = re.compile(r"([-\d.]+) ± ([-\d.]+) \(([-\d.]+) ± ([-\d.]+)\)")


@dataclass
class ComparisonView:
    """What a comparison's figures read."""
    out_dir: Path
    per_seed: list[dict]
    attacks: list[str]
    epoch_rows: list[dict]     # parsed table_epochs.md: {"epochs", name: (acc, acc_sd, auc, auc_sd)}
    defenses: list[str]        # each seed's defense setting, as its config.yaml states it

    @property
    def label(self) -> str:
        r = self.per_seed[0]
        return f"{r.get('dataset_display_name', r['dataset'])}, {r['model']}"


def parse_epoch_table(text: str) -> list[dict]:
    """Rows of compare's ``table_epochs.md`` (Table XII layout: ``acc ± sd (auc ± sd)``
    cells, accuracy in %): {"epochs": str, attack: (acc, acc_sd, auc, auc_sd) or None}."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    if len(lines) < 3:
        return []
    names = [c.strip() for c in lines[0].strip("|").split("|")][1:]
    rows = []
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        row: dict = {"epochs": cells[0]}
        for name, cell in zip(names, cells[1:]):
            m = _CELL.fullmatch(cell)
            row[name] = tuple(float(g) for g in m.groups()) if m else None
        rows.append(row)
    return rows


def _defense_of(seed_dir: Path) -> str:
    path = seed_dir / "config.yaml"
    if not path.is_file():
        return "unknown"
    d = (yaml.safe_load(path.read_text()) or {}).get("defense") or {}
    params = ", ".join(f"{k}={v}" for k, v in sorted(d.items()) if k != "name")
    return d.get("name", "none") + (f" ({params})" if params and d.get("name", "none") != "none" else "")


def load_comparison(out_dir: Path) -> ComparisonView:
    out_dir = Path(out_dir)
    meta = read_json(out_dir / "compare.json")
    seeds = meta.get("seeds", []) if isinstance(meta, dict) else None
    # the seed directories' names come from the file: integers only, so none leaves out_dir
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise FlSimError(f"{out_dir}/compare.json: 'seeds' must be a list of integers")
    seed_dirs = [out_dir / f"seed-{s}" for s in seeds]
    missing = [d.name for d in seed_dirs if not (d / "results.json").is_file()]
    if missing or not seed_dirs:
        raise FlSimError(f"{out_dir}: comparison without the results of {', '.join(missing) or 'any seed'}")
    epochs = out_dir / "table_epochs.md"
    # a defense comparison labels each of its comparisons; a plain one says it in each seed's config
    defenses = [meta["defense"] if "defense" in meta else _defense_of(d) for d in seed_dirs]
    return ComparisonView(out_dir, [read_json(d / "results.json") for d in seed_dirs], list(meta.get("attacks", [])),
                          parse_epoch_table(epochs.read_text()) if epochs.is_file() else [], defenses)


def table_x(view: ComparisonView):
    """Attack accuracy and AUC per attack, mean ± std over seeds, on every target and on
    the victims' records."""
    names = [n for n in view.attacks if metric_values(view.per_seed, n)["auc"]]
    if not names:
        return "no attack of the comparison has results"
    fig, axes = new_figure(max(6.0, 1.3 * len(names) + 2), 4.2, 1, 2)
    xs = np.arange(len(names))
    for ax, key, scale, unit in ((axes[0], "accuracy", 100, "attack accuracy %"), (axes[1], "auc", 1, "AUC")):
        series = [("reported", [metric_values(view.per_seed, n)[key] for n in names])]
        victims = [_victim(view, n, key) for n in names]
        if any(victims):  # global attacks over every participant also report the victims' view
            series.append(("on the victims' records", victims))
        width = 0.8 / len(series)
        for i, (label, values) in enumerate(series):
            v = [np.asarray(x, float) * scale for x in values]
            ax.bar(xs + (i - (len(series) - 1) / 2) * width, [x.mean() if len(x) else np.nan for x in v], width,
                   label=label, yerr=[x.std(ddof=1) if len(x) > 1 else 0 for x in v], capsize=3)
        ax.axhline(0.5 * scale, color="k", ls=":", lw=0.8)
        ax.set_xticks(xs, names, rotation=25, ha="right", fontsize=7)
        ax.set_xlabel("attack")
        ax.set_ylabel(f"{unit} (mean ± std)")
        ax.legend(fontsize=7)
    fig.suptitle(f"Table X layout, {len(view.per_seed)} seeds: {view.label}", fontsize=10)
    return fig


def _victim(view: ComparisonView, name: str, key: str) -> list[float]:
    return [v[key] for r in view.per_seed for a in r["attacks"]
            if a["name"] == name and "auc" in a and (v := on_victim(a)) is not None]


def table_xii(view: ComparisonView):
    if not view.epoch_rows:
        return "the comparison was run without --epoch-sets (Table XII re-attacks each seed with other epochs)"
    names = sorted({k for r in view.epoch_rows for k, v in r.items() if k != "epochs" and v is not None})
    fig, axes = new_figure(9.0, 4.0, 1, 2)
    xs = np.arange(len(view.epoch_rows))
    for name in names:
        cells = [r.get(name) for r in view.epoch_rows]
        for ax, i in ((axes[0], 0), (axes[1], 2)):
            ax.errorbar(xs, [c[i] if c else np.nan for c in cells], yerr=[c[i + 1] if c else 0 for c in cells],
                        fmt="-o", capsize=3, ms=4, label=name)
    for ax, unit in ((axes[0], "attack accuracy %"), (axes[1], "AUC")):
        ax.set_xticks(xs, [r["epochs"] for r in view.epoch_rows], rotation=20, fontsize=7)
        ax.set_xlabel("epochs observed")
        ax.set_ylabel(f"{unit} (mean ± std over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Table XII: attack by the epochs observed: {view.label}", fontsize=10)
    return fig


def privacy_utility(view: ComparisonView):
    """Attack AUC against the target's test accuracy, one point per defense setting and
    attack: drawn once the directory holds runs under several defense settings."""
    settings = sorted(set(view.defenses))
    if len(settings) < 2:
        return (f"every run here used the same defense ({settings[0] if settings else 'none'}); the "
                "privacy-utility plot needs runs under several defense settings")
    fig, axes = grid(1, cols=1, panel=(6.0, 4.5))
    ax = axes[0]
    for name in view.attacks:
        for d in settings:
            runs = [r for r, dd in zip(view.per_seed, view.defenses) if dd == d]
            auc = metric_values(runs, name)["auc"]
            if auc:
                acc = np.mean([r["target"]["test_acc"] for r in runs])
                ax.scatter(acc, np.mean(auc), label=f"{name}, {d}")
    ax.set_xlabel("target test accuracy")
    ax.set_ylabel("attack AUC")
    ax.set_title(f"Privacy against utility: {view.label}", fontsize=10)
    ax.legend(fontsize=7)
    return fig


COMPARISON_FIGURES = [
    FigureSpec("table_x", "Table X layout with error bars", "Attack accuracy and AUC per attack, "
               "mean ± std over seeds, as reported and on the victims' records.", table_x),
    FigureSpec("table_xii_epochs", "Table XII: epochs observed", "Each seed re-attacked with every "
               "--epoch-sets set; mean ± std over seeds.", table_xii),
    FigureSpec("privacy_utility", "Privacy against utility", "Attack AUC against target test "
               "accuracy per defense setting.", privacy_utility),
]


def write_comparison_report(out_dir: Path) -> list[str]:
    """report.md / report.html, figures/ and tables/ of a compare directory."""
    view = load_comparison(out_dir)
    drawn = draw_figures(view.out_dir, view, COMPARISON_FIGURES)
    doc = Document(f"Comparison report: {view.label}, {len(view.per_seed)} seeds")
    attacks, attacks_csv = seed_attack_table(view.per_seed, view.attacks)
    target, target_csv = seed_target_table(view.per_seed)
    layout = Table(["data, model", *view.attacks],
                   [[view.label, *(mean_std(metric_values(view.per_seed, n)["accuracy"]) for n in view.attacks)]],
                   "Attack accuracy %, mean ± std over seeds (Table X layout)")
    doc.add(Paragraph(f"Seeds {', '.join(str(r['seed']) for r in view.per_seed)}; defense: "
                      f"{', '.join(sorted(set(view.defenses)))}."),
            Heading("Tables"), layout, attacks, target, *figure_blocks(drawn), Heading("Runs"),
            *(Link(f"seed {r['seed']}: report", f"seed-{r['seed']}/report.html") for r in view.per_seed))
    write_csv(view.out_dir / "tables" / "attacks.csv", attacks_csv)
    write_csv(view.out_dir / "tables" / "target.csv", target_csv)
    write_documents(view.out_dir, doc)
    return [f"figures/{spec.name}.png" for spec, absent in drawn if absent is None]
