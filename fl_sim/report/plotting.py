"""What every figure shares: matplotlib figures on the Agg canvas (no display, no pyplot
state, so reports can be drawn from any process or thread), a figure registry entry,
and an atomic PNG writer."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fl_sim.io import atomic_write_bytes

DPI = 110
MEMBER, NONMEMBER = "tab:red", "tab:blue"


def new_figure(width: float = 5.5, height: float = 4.2, nrows: int = 1, ncols: int = 1, squeeze: bool = True):
    """(figure, axes) on the Agg canvas; ``axes`` is one Axes for one panel when
    ``squeeze``, else an (nrows, ncols) array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def grid(n: int, cols: int = 3, panel: tuple[float, float] = (4.2, 3.6)):
    """(figure, flat list of n axes) for n panels, ``cols`` a row; spare axes hidden."""
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    fig, axes = new_figure(panel[0] * cols, panel[1] * rows, rows, cols, squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def save_png(fig, path: Path) -> None:
    """``fig`` as a PNG at ``path``, written atomically."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(Path(path), buf.getvalue())


@dataclass(frozen=True)
class FigureSpec:
    """One figure of a report. ``draw(view)`` returns a matplotlib figure, or a sentence
    saying why the figure is absent (the report prints it in the figure's place)."""
    name: str           # file stem under figures/
    title: str          # the report's heading for it
    caption: str
    draw: Callable[[Any], Any]


@dataclass
class RunView:
    """What a run's figures read: ``results.json`` and the figure data (None when the run
    predates it)."""
    results: dict
    figdata: dict | None

    @property
    def label(self) -> str:
        """The dataset as the run names it (a stand-in carries its own name) and the model."""
        r = self.results
        return f"{r.get('dataset_display_name', r['dataset'])}, {r['model']}"

    def recorded(self) -> list[tuple[str, dict]]:
        """(attack name, figure-data entry) of the attacks with recorded evaluations, in
        the order the run attacked."""
        if not self.figdata:
            return []
        attacks = self.figdata.get("attacks", {})
        order = [a["name"] for a in self.results.get("attacks", [])]
        names = [n for n in order if n in attacks] + [n for n in attacks if n not in order]
        return [(n, attacks[n]) for n in names if attacks[n].get("evaluations")]

    def missing_data(self) -> str:
        """Why per-record figures cannot be drawn, when they cannot."""
        if self.figdata is None:
            return ("the run has no figure_data.json (it predates per-record figure data); "
                    "rerun it to get this figure")
        return "no attack of this run recorded per-record scores (none ran, or all were skipped)"
