"""What a run shows while it goes, and ``run.log``.

Three modes: ``bars`` (stderr is a terminal: tqdm bars with rate and ETA), ``lines``
(stderr is a file or a pipe: one line per finished stage, no bar redraws), ``quiet``
(``--quiet``: nothing). Every finished stage is also logged to ``run.log`` in the run
directory, whatever the mode.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from fl_sim import catalog
from fl_sim.config import Config

LOG = logging.getLogger("fl_sim")
LOG_FILE = "run.log"


def progress_mode(enabled: bool, stream=None) -> str:
    """``quiet`` when disabled, else ``bars`` on a terminal and ``lines`` elsewhere."""
    if not enabled:
        return "quiet"
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    return "bars" if isatty is not None and isatty() else "lines"


@contextlib.contextmanager
def run_log(run_dir: Path) -> Iterator[Path]:
    """Within the block the ``fl_sim`` logger also writes to ``run_dir/run.log``
    (appended: a resumed run continues its log)."""
    path = Path(run_dir) / LOG_FILE
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    LOG.addHandler(handler)
    level = LOG.level
    LOG.setLevel(logging.INFO)
    try:
        yield path
    finally:
        LOG.removeHandler(handler)
        LOG.setLevel(level)
        handler.close()


def warn(message: str) -> None:
    """A warning on stderr (always, even when quiet) and in run.log."""
    LOG.warning(message)
    print(f"fl-sim: warning: {message}", file=sys.stderr, flush=True)


class Stage:
    """One stage (a federation's rounds, an attack's feature extraction or training).

    ``total`` is the expected number of steps (None: unknown, no ETA); ``initial`` the
    steps already done (a resumed federation)."""

    def __init__(self, mode: str, desc: str, total: int | None, unit: str, initial: int = 0,
                 leave: bool = True, line: bool = True):
        self.mode, self.desc, self.unit, self.line = mode, desc, unit, line
        self.n, self.t0, self.closed = initial, time.time(), False
        self.bar = None
        if mode == "bars":
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr,
                            leave=leave)

    def update(self, n: int = 1) -> None:
        self.set(self.n + n)

    def set(self, n: int) -> None:
        self.n = n
        if self.bar is not None:
            if self.bar.total is not None and n > self.bar.total:
                self.bar.total = n  # an estimate fell short: no bar past 100 %
            self.bar.n = n
            self.bar.refresh()

    def close(self, note: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        line = f"{self.desc}: {self.n} {self.unit}{'' if self.n == 1 else 's'} in {time.time() - self.t0:.1f} s"
        line += f" ({note})" if note else ""
        if self.line:  # else the caller reports the stage in its own words
            LOG.info(line)
        if self.bar is not None:
            self.bar.close()
        elif self.mode == "lines" and self.line:
            print(f"fl-sim: {line}", file=sys.stderr, flush=True)


class Progress:
    """Stages of one run, shown in one mode (see :func:`progress_mode`)."""

    def __init__(self, mode: str):
        self.mode = mode

    def stage(self, desc: str, total: int | None, unit: str, initial: int = 0,
              leave: bool = True, line: bool = True) -> Stage:
        return Stage(self.mode, desc, total, unit, initial, leave, line)

    def say(self, line: str) -> None:
        """One stage line: logged, and on stderr in ``lines`` mode (bars show it already)."""
        LOG.info(line)
        if self.mode == "lines":
            print(f"fl-sim: {line}", file=sys.stderr, flush=True)

    def tell(self, line: str) -> None:
        """A line the user must see unless quiet (bars or not), and the log."""
        LOG.info(line)
        if self.mode != "quiet":
            print(f"fl-sim: {line}", file=sys.stderr, flush=True)

    def rounds(self, rounds: int) -> Rounds:
        return Rounds(self, rounds)


class Rounds:
    """One stage per federated training (one federation trains at a time), advanced once
    per round; ``begin`` opens it before the federation starts, so that its time counts
    the simulation's start-up too."""

    def __init__(self, progress: Progress, rounds: int):
        self.progress, self.total = progress, rounds
        self.stages: dict[str, Stage] = {}

    def begin(self, training: str) -> None:
        if training not in self.stages:
            for other in self.stages.values():
                other.close()
            self.stages[training] = self.progress.stage(f"{training} rounds", self.total, "round")

    def tick(self, training: str, rnd: int) -> None:
        """``rnd`` (1-based) is done; a resumed federation starts past round 1."""
        self.begin(training)
        self.stages[training].set(rnd)

    def close(self) -> None:
        for st in self.stages.values():
            st.close()


def expected_steps(cfg: Config, name: str) -> tuple[int | None, int]:
    """(snapshots whose features attack ``name`` extracts, attack models it fits), from
    its catalog entry; None where features are shared between attacks (the stand-alone
    target's are cached) and no estimate holds."""
    s = catalog.get(name)
    epochs = len(cfg.attack_epochs())
    if s.observer == "uploads":
        jobs = cfg.federation.participants if s.targets == "each_participant" else len(cfg.victims())
        return jobs * epochs, jobs
    if s.observer == "received":
        return epochs, 1
    return None, 1


class AttackProgress:
    """Progress of the attacks: a bar over the attacks and, within each, bars with ETAs
    for feature extraction (per snapshot) and attack training (per fitted model).

    A watcher for :func:`fl_sim.scenarios.common.watching`; :meth:`done` is the
    ``on_done(name, seconds)`` of :func:`fl_sim.scenarios.run_attacks`."""

    def __init__(self, progress: Progress, cfg: Config):
        self.progress, self.cfg = progress, cfg
        mode = cfg.federation.mode
        self.names = [n for n in cfg.attack.names if mode in catalog.get(n).modes]
        self.overall = progress.stage("attacks", len(self.names), "attack") if self.names else None
        self.features: Stage | None = None
        self.fits: Stage | None = None
        self.finished = 0
        # per participant an evaluator extracts features, then fits: the time up to a
        # "features" event was spent extracting, up to a "scored" one fitting and scoring
        self.last = time.time()
        self.seconds = {"features": 0.0, "scored": 0.0}

    def _current(self) -> str:
        return self.names[min(self.finished, len(self.names) - 1)]

    def __call__(self, event: str, **info) -> None:
        if not self.names:
            return
        snapshots, models = expected_steps(self.cfg, self._current())
        now = time.time()
        if event in self.seconds:
            self.seconds[event] += now - self.last
            self.last = now
        if event == "features":
            if self.features is None:
                self.features = self.progress.stage(f"{self._current()} features", snapshots, "snapshot",
                                                    leave=False, line=False)
            self.features.update()
        elif event == "scored":
            if self.fits is None:
                self.fits = self.progress.stage(f"{self._current()} attack training", models, "model",
                                                leave=False, line=False)
            self.fits.update()

    def done(self, name: str, seconds: float) -> None:
        feats = self.features.n if self.features else 0
        fits = self.fits.n if self.fits else 0
        for st in (self.features, self.fits):
            if st is not None:
                st.close()
        self.features = self.fits = None
        self.finished += 1
        t = self.seconds
        self.progress.say(f"attack {name}: features of {feats} snapshot(s) in {t['features']:.1f} s, "
                          f"{fits} attack model(s) fitted in {t['scored']:.1f} s, {seconds:.1f} s in all")
        self.last, self.seconds = time.time(), {"features": 0.0, "scored": 0.0}
        if self.overall is not None:
            self.overall.update()

    def close(self) -> None:
        if self.overall is not None:
            self.overall.close()
