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
        results = _read(path / "results.json")
        missing = [k for k in RESULT_KEYS if not isinstance(results, dict) or k not in results]
        if missing:
            raise FlSimError(f"{path}/results.json is not an fl-sim results file (no {', '.join(missing)})")
        return "run", _malformed_is_bad_input(path / "results.json", write_report, path, results)
    if (path / "compare.json").is_file():
        from fl_sim.report.comparison import write_comparison_report

        _read(path / "compare.json")
        return "comparison", _malformed_is_bad_input(path / "compare.json", write_comparison_report, path)
    raise FlSimError(f"{path}: not a complete run or comparison directory (no results.json or compare.json)")


# what every results.json since the first release holds (the report reads them all)
RESULT_KEYS = ("dataset", "model", "seed", "target", "attacks")


def _read(path: Path):
    try:
        return read_json(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise FlSimError(f"{path} does not parse: {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise FlSimError(f"{path} cannot be read: {e.strerror or e}") from None


def _malformed_is_bad_input(source: Path, fn, *args):
    """The report of files a user may have edited or received: a field of the wrong shape
    is a one-line error naming the file, not a traceback (the report code trusts the shape
    fl-sim writes)."""
    try:
        return fn(*args)
    except FlSimError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise FlSimError(f"{source} (or a file it names) is malformed: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from None
