"""Reports: the console summary of a run, and the report of a run or comparison
directory (``report.md``, the standalone ``report.html``, ``figures/*.png``,
``tables/*.csv``), a pure function of what the directory saved.

Modules: ``summary`` (console text), ``tables``, ``document`` (Markdown and HTML),
``plotting`` (the figure registry entry, Agg figures), ``roc``, ``gradients`` (Figs. 3, 4),
``scores`` (Figs. 5, 6), ``figdata`` (the per-record data those figures need, saved at
attack time), ``run_report``, ``comparison`` (``fl-sim compare`` directories),
``progress`` (bars, stage lines, run.log).
"""

from __future__ import annotations

from pathlib import Path

from fl_sim.errors import FlSimError
from fl_sim.io import read_json
from fl_sim.report.summary import attack_rows, on_victim, reattack_table, summary_lines, verdict

__all__ = ["attack_rows", "on_victim", "reattack_table", "regenerate", "summary_lines", "verdict",
           "write_report"]


def write_report(run_dir: Path, results: dict) -> list[str]:
    """The report of the run in ``run_dir`` (``results``: its results.json); returns the
    figure files drawn."""
    from fl_sim.report.run_report import write_run_report

    return write_run_report(Path(run_dir), results)


def regenerate(path: str | Path) -> tuple[str, list[str]]:
    """Rebuild the report of a run directory (from results.json and figure_data.json) or
    of a comparison directory (compare.json and its seeds), without retraining.
    Returns (what it was: "run" or "comparison", the figure files drawn)."""
    path = Path(path)
    if (path / "results.json").is_file():
        try:
            results = read_json(path / "results.json")
        except ValueError as e:
            raise FlSimError(f"{path}/results.json does not parse: {e}") from None
        return "run", write_report(path, results)
    if (path / "compare.json").is_file():
        from fl_sim.report.comparison import write_comparison_report

        return "comparison", write_comparison_report(path)
    raise FlSimError(f"{path}: not a complete run or comparison directory (no results.json or compare.json)")
