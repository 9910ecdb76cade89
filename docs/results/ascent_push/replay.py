"""Why the four victims' global-ascent federations of a seed end at the same test accuracy.

    python docs/results/ascent_push/replay.py [CONFIG] [--seed S] [--set KEY=VALUE ...]

Replays, in one process, the federation of CONFIG (default configs/location30_fc.yaml)
with the participants' own local training (their plan, seeds and optimizer: what the
Flower clients run) and FedAvg's mean of the four equal-sized uploads: once passive and
once per victim with the aggregator's sum-rule push (fl_sim.federated.ascent_step) in
the push rounds. It prints, per push round:

- the push's norm, the model's, and the round's own aggregate change;
- each victim's push against victim 0's from the same model: how many elements differ,
  the largest difference and the difference's norm (what the victim changes in the push);
- the push split into the victim's members' part and the non-members' part (the
  non-member targets are the same records for every victim);
- what one round of training leaves of it: the norm of (aggregate after the pushed round
  - aggregate after the plain round) and its cosine with the push;

and at the end every federation's test accuracy, the largest difference of each final
model from victim 0's, and how many test records each classifies differently from
victim 0's final model and from the passive one.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from attacks.active import gradient_ascent
from clients.common import load_partition, local_train
from fl_sim.catalog import TRAININGS
from fl_sim.config import load_config
from fl_sim.federated import ascent_step, write_plans
from fl_sim.models import get_arrays, model_from
from fl_sim.plan import ClientPlan
from fl_sim.splits import target_sets
from fl_sim.target import initial_arrays, load_data, make_run_split, model_spec
from fl_sim.training import predict_logits


def flat(arrays: dict) -> np.ndarray:
    return np.concatenate([np.ravel(arrays[k]).astype(np.float64) for k in sorted(arrays)])


class Federation:
    def __init__(self, cfg, work: Path):
        self.cfg = cfg
        self.data = load_data(cfg)
        self.split = make_run_split(cfg, len(self.data.y))
        plan_path, _ = write_plans(cfg, TRAININGS["passive"], self.data, self.split, work, "passive")
        self.plan = ClientPlan.load(plan_path)
        self.spec = model_spec(cfg, self.data)
        self.parts = [load_partition(self.plan, p) for p in range(cfg.federation.participants)]
        self.test = np.asarray(sorted(self.split.test), dtype=np.int64)

    def round(self, start: dict, rnd: int) -> dict:
        uploads = []
        for p, (x, y) in enumerate(self.parts):
            model = model_from(self.spec, start)
            local_train(self.plan, p, rnd, model, x, y)
            uploads.append(get_arrays(model))
        return {k: np.mean([u[k] for u in uploads], axis=0).astype(start[k].dtype) for k in start}

    def predictions(self, arrays: dict) -> np.ndarray:
        return predict_logits(model_from(self.spec, arrays), self.data.x[self.test]).argmax(1).numpy()

    def group_push(self, arrays: dict, victim: int, members: bool) -> np.ndarray:
        sets = target_sets(self.split, [victim])
        labels = np.r_[sets.known_labels, sets.eval_labels]
        idx = sets.all_indices()[labels == (1 if members else 0)]
        model = model_from(self.spec, arrays)
        gradient_ascent(model, self.data.x[idx], self.data.y[idx], self.cfg.attack.gamma)
        return flat(get_arrays(model)) - flat(arrays)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default="configs/location30_fc.yaml")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    args = ap.parse_args()
    overrides = args.overrides + ([f"seed={args.seed}"] if args.seed is not None else [])
    cfg = load_config(args.config, overrides)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as work:
        fed = Federation(cfg, Path(work))
        victims = list(range(cfg.federation.participants))
        steps = {v: ascent_step(cfg.for_victim(v), fed.data, fed.split) for v in victims}
        pushes = [r for r in cfg.ascent_rounds() if r <= cfg.federation.rounds]
        print(f"{fed.data.display_name}, seed {cfg.seed}, gamma {cfg.attack.gamma:g} per target record, "
              f"push rounds {pushes}\n")
        g = initial_arrays(cfg, fed.data)
        for rnd in range(1, pushes[0]):
            g = fed.round(g, rnd)
        state = {"passive": g, **{v: g for v in victims}}
        for rnd in range(pushes[0], cfg.federation.rounds + 1):
            if rnd in pushes:
                push_round(fed, state, steps, rnd)
            else:
                state = {k: fed.round(a, rnd) for k, a in state.items()}
        final = {k: fed.predictions(a) for k, a in state.items()}
        print("\n| federation | test accuracy | max abs difference from victim 0's final model "
              "| test records classified differently from victim 0's / from passive |")
        print("|---|---|---|---|")
        labels = np.asarray(fed.data.y[fed.test])
        for k, a in state.items():
            print(f"| {'passive' if k == 'passive' else f'ascent, victim {k}'} | {np.mean(final[k] == labels):.6f} "
                  f"| {np.abs(flat(a) - flat(state[0])).max():.3g} "
                  f"| {int((final[k] != final[0]).sum())} / {int((final[k] != final['passive']).sum())} |")
    print(f"\n{time.time() - t0:.0f} s")


def push_round(fed: Federation, state: dict, steps: dict, rnd: int) -> None:
    """Push and train round ``rnd`` in every federation (in place), printing what the push was."""
    sent = {v: steps[v](state[v]) for v in steps}
    zero = flat(state[0])
    sent0 = flat(sent[0])
    plain0 = fed.round(state[0], rnd)  # victim 0's federation without this push: what survives?
    for v in steps:
        start = flat(state[v])
        push = flat(sent[v]) - start
        members, others = (fed.group_push(state[v], v, m) for m in (True, False))
        line = (f"round {rnd}, victim {v}: push {np.linalg.norm(push):.3g}, model {np.linalg.norm(start):.3g}; "
                f"members' part {np.linalg.norm(members):.3g}, non-members' part {np.linalg.norm(others):.3g}")
        if v and np.array_equal(start, zero):
            d = flat(sent[v]) - sent0
            line += (f"; against victim 0's push from the same model: {np.mean(d != 0):.4f} of the elements "
                     f"differ, max {np.abs(d).max():.3g}, norm {np.linalg.norm(d):.3g}")
        elif v:
            line += f"; starts {np.linalg.norm(start - zero):.3g} away from victim 0's model"
        print(line, flush=True)
        state[v] = fed.round(sent[v], rnd)
        if v == 0:
            after = flat(state[0]) - flat(plain0)
            own = flat(plain0) - zero
            push0 = sent0 - zero
            print(f"round {rnd}: the round's own aggregate change {np.linalg.norm(own):.3g}; one round after the "
                  f"push, aggregate(pushed) - aggregate(plain) has norm {np.linalg.norm(after):.3g}, cosine with "
                  f"the push {after @ push0 / np.linalg.norm(after) / np.linalg.norm(push0):.3f}", flush=True)
    state["passive"] = fed.round(state["passive"], rnd)


if __name__ == "__main__":
    main()
