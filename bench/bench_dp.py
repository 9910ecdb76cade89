"""DP-SGD local training: Opacus's ghost clipping (what clients/dp.py uses) against its
per-sample hooks and against plain SGD, side by side.

Run from the repository root:  python bench/bench_dp.py [--reps 5] [--threads 1]

One local epoch of one participant of configs/location30_fc.yaml's shape (600 records x 446
binary features, 30 classes, the paper's FC net, batch 32, lr 0.05, momentum 0.9, noise 1.0,
clip 1.0), random data. The methods run interleaved, ``--reps`` times; it prints the median
seconds of each and the ratios from this one run, and the largest parameter difference
between ghost and hooks under the same seeds (they take the same step). Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run without installing

from fl_sim.models import build_model  # noqa: E402
from fl_sim.training import train_epochs  # noqa: E402


def dp_epoch(mode: str, x, y, seed: int) -> tuple[float, dict]:
    from opacus import PrivacyEngine

    torch.manual_seed(seed)
    model = build_model("fc", (x.shape[1],), 30)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    kw = dict(module=model, optimizer=opt, data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0,
              noise_generator=torch.Generator().manual_seed(seed + 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode == "ghost":
            m, o, loss_fn, dl = PrivacyEngine(accountant="rdp").make_private(
                criterion=torch.nn.CrossEntropyLoss(), grad_sample_mode="ghost", **kw)
        else:
            m, o, dl = PrivacyEngine(accountant="rdp").make_private(**kw)
            loss_fn = torch.nn.CrossEntropyLoss()
        t = time.perf_counter()
        for xb, yb in dl:
            if len(yb):
                o.zero_grad()
                loss_fn(m(xb), yb).backward()
                o.step()
        dt = time.perf_counter() - t
    return dt, {k: v.detach().clone() for k, v in model.state_dict().items()}


def plain_epoch(x, y, seed: int) -> float:
    torch.manual_seed(seed)
    model = build_model("fc", (x.shape[1],), 30)
    t = time.perf_counter()
    train_epochs(model, x, y, epochs=1, batch_size=32, lr=0.05, momentum=0.9, seed=seed)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a client's share)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 2, (600, 446)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 30, 600))
    times = {"plain": [], "hooks": [], "ghost": []}
    dp_epoch("ghost", x, y, 0)   # warm-up: imports, first allocations
    for r in range(args.reps):
        times["plain"].append(plain_epoch(x, y, r))
        dt, hooks = dp_epoch("hooks", x, y, r)
        times["hooks"].append(dt)
        dt, ghost = dp_epoch("ghost", x, y, r)
        times["ghost"].append(dt)
        diff = max(float((hooks[k] - ghost[k]).abs().max()) for k in hooks)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"one local epoch, 600 records, FC 446-1024-512-256-128-30, {args.threads} thread(s), "
          f"median of {args.reps}:")
    for k, v in med.items():
        print(f"  {k:6s} {v:7.3f} s   ({v / med['plain']:.1f}x plain SGD)")
    print(f"  hooks / ghost = {med['hooks'] / med['ghost']:.1f}x; "
          f"max |param difference| ghost vs hooks, same seeds: {diff:.1e}")


if __name__ == "__main__":
    main()
