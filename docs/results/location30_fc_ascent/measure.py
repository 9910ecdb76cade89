"""Why gradient ascent adds (almost) nothing on Location-30: a one-round counterfactual.

Issue 9, item 5. For each seed directory of a passive `fl-sim compare` run of
configs/location30_fc.yaml (every global model kept around the observed epochs), this
replays the rounds in which the active attackers push, with the federation's own local
training (same seeds), once without the push and once with it, and measures:

- global attacker (pushes the model it sends in an observed round r; victim participant 0):
  the push's norm against the victim's own update norm, and the membership AUC of the
  victim's *loss drop* over its local epoch (loss under the model it received minus loss
  under its upload) on its evaluation targets, the signal the ascent is meant to create,
  and of the loss under its upload alone;
- local attacker (participant N-1 pushes its upload in round r = observed - 1): the push's
  share of the aggregate (1/N of it, or all of it when boosted by N) against the aggregate's
  own change, and the membership AUCs of the loss drop from the pushed global model to the
  next global model and of the loss under that next model, on the other participants'
  evaluation targets.

The replay is checked against the stored uploads (max abs difference printed).

    python docs/results/location30_fc_ascent/measure.py RUN_DIR [RUN_DIR ...] > table.md

RUN_DIR: a seed directory (config.yaml, split.json, plans/, snapshots/passive) of
docs/results/location30_fc/run.sh's run (run from the repository root).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from attacks.active import gradient_ascent
from clients.common import load_partition, local_train
from fl_sim.config import load_config
from fl_sim.models import get_arrays, model_from
from fl_sim.plan import ClientPlan
from fl_sim.snapshots import SnapshotStore
from fl_sim.splits import Split, target_sets
from fl_sim.target import load_data, model_spec

GAMMAS = [0.0, 1e-5, 1e-4, 1e-3, 1e-2]


def flat(arrays: dict) -> np.ndarray:
    return np.concatenate([np.ravel(arrays[k]).astype(np.float64) for k in sorted(arrays)])


def losses(spec, arrays, x, y) -> np.ndarray:
    model = model_from(spec, arrays)
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x))
        return torch.nn.functional.cross_entropy(out, torch.from_numpy(y), reduction="none").numpy()


class Replay:
    def __init__(self, run_dir: Path):
        self.cfg = load_config(run_dir / "config.yaml")
        self.data = load_data(self.cfg)
        self.spec = model_spec(self.cfg, self.data)
        self.split = Split.load(run_dir / "split.json")
        self.store = SnapshotStore(run_dir / "snapshots" / "passive")
        self.plan = ClientPlan.load(run_dir / "plans" / "passive.json")

    def xy(self, idx) -> tuple[np.ndarray, np.ndarray]:
        idx = np.asarray(idx, dtype=np.int64)
        return np.asarray(self.data.x[idx], np.float32), np.asarray(self.data.y[idx], np.int64)

    def train(self, start: dict, pid: int, rnd: int) -> dict:
        """Participant ``pid``'s local training in round ``rnd`` from ``start``: the clients'
        own code with the run's own plan (same seeds, threads, optimizer)."""
        model = model_from(self.spec, start)
        local_train(self.plan, pid, rnd, model, *load_partition(self.plan, pid))
        return get_arrays(model)

    def push(self, arrays: dict, targets, gamma: float) -> dict:
        if gamma == 0:
            return arrays
        model = model_from(self.spec, arrays)
        gradient_ascent(model, *self.xy(targets), gamma)
        return get_arrays(model)


def mean_arrays(uploads: list[dict]) -> dict:
    return {k: np.mean([u[k] for u in uploads], axis=0).astype(uploads[0][k].dtype) for k in uploads[0]}


def aucs(rp: Replay, before: dict, after: dict, ev, lab) -> dict:
    """Membership AUCs of two scores on the evaluation targets: the loss drop from ``before``
    to ``after`` (the contrast the ascent is meant to create) and the loss under ``after``."""
    x, y = rp.xy(ev)
    after_loss = losses(rp.spec, after, x, y)
    return {"auc": roc_auc_score(lab, losses(rp.spec, before, x, y) - after_loss),
            "auc_level": roc_auc_score(lab, -after_loss)}


def global_rows(rp: Replay, victim: int = 0) -> list[dict]:
    sets = target_sets(rp.split, [victim])
    rows = []
    for r in rp.cfg.ascent_rounds():
        g = rp.store.get(r - 1, None, "global")
        honest = rp.train(g, victim, r)
        err = np.abs(flat(honest) - flat(rp.store.get(r, victim, "upload"))).max()
        own = np.linalg.norm(flat(honest) - flat(g))
        for gamma in GAMMAS:
            sent = rp.push(g, sets.all_indices(), gamma)
            up = rp.train(sent, victim, r) if gamma else honest
            rows.append({"round": r, "gamma": gamma, "replay_err": err,
                         "push_over_update": np.linalg.norm(flat(sent) - flat(g)) / own,
                         **aucs(rp, sent, up, sets.eval, sets.eval_labels)})
    return rows


def local_rows(rp: Replay) -> list[dict]:
    n = rp.cfg.federation.participants
    attacker, victims = n - 1, list(range(n - 1))
    sets = target_sets(rp.split, victims)
    rows = []
    for r in rp.cfg.ascent_rounds(local=True):
        g = rp.store.get(r - 1, None, "global")
        uploads = [rp.train(g, p, r) for p in range(n)]
        err = np.abs(flat(uploads[attacker]) - flat(rp.store.get(r, attacker, "upload"))).max()
        agg = mean_arrays(uploads)
        change = np.linalg.norm(flat(agg) - flat(g))
        for gamma in GAMMAS:
            for boost in (1, n):
                if gamma == 0 and boost > 1:
                    continue
                pushed = rp.push(uploads[attacker], sets.all_indices(), gamma)
                delta = {k: boost * (pushed[k] - uploads[attacker][k]) / n for k in agg}
                sent = {k: (agg[k] + delta[k]).astype(agg[k].dtype) for k in agg}
                nxt = mean_arrays([rp.train(sent, p, r + 1) for p in range(n)])
                rows.append({"round": r, "gamma": gamma, "boost": boost, "replay_err": err,
                             "push_over_update": np.linalg.norm(flat(delta)) / change,
                             **aucs(rp, sent, nxt, sets.eval, sets.eval_labels)})
    return rows


def summarise(rows: list[dict], keys: tuple[str, ...]) -> list[str]:
    out = []
    for key in sorted({tuple(r[k] for k in keys) for r in rows}):
        sel = [r for r in rows if tuple(r[k] for k in keys) == key]
        ratio = np.mean([r["push_over_update"] for r in sel])
        cells = [f"{a.mean():.3f} ± {a.std(ddof=1):.3f}"
                 for a in (np.array([r[k] for r in sel]) for k in ("auc", "auc_level"))]
        out.append("| " + " | ".join(f"{v:g}" for v in key)
                   + f" | {ratio:.3g} | {' | '.join(cells)} | {len(sel)} |")
    return out


def main(dirs: list[str]) -> None:
    g_rows, l_rows = [], []
    for d in dirs:
        rp = Replay(Path(d))
        g_rows += global_rows(rp)
        l_rows += local_rows(rp)
    err = max(r["replay_err"] for r in g_rows + l_rows)
    print(f"Seed directories: {', '.join(dirs)}. Replay against the stored uploads: max abs "
          f"difference {err:.2g}.\n")
    print("Global attacker (victim 0; push in each observed round), mean over rounds and seeds:\n")
    print("| gamma per record | push norm / victim's update norm | AUC of the victim's loss drop "
          "| AUC of its loss after the epoch | rounds |")
    print("|---|---|---|---|---|")
    print("\n".join(summarise(g_rows, ("gamma",))))
    print("\nLocal attacker (participant N-1; push in the round before each observed one):\n")
    print("| gamma per record | boost | push's share of the aggregate / aggregate's change "
          "| AUC of the next round's loss drop | AUC of the loss under the next global model | rounds |")
    print("|---|---|---|---|---|---|")
    print("\n".join(summarise(l_rows, ("gamma", "boost"))))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
