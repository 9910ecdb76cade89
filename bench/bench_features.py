"""Throughput of per-example white-box features: batched extractor vs per-example loop.

Run from the repository root:  python bench/bench_features.py [--threads 2] [--reps 5]

For each case (model, gradient layers) it times, interleaved side by side and repeated
``--reps`` times, and reports the median records/s of:
  batched   attacks.features.iter_features (hooks + einsum, one fwd+bwd per chunk): all
            features (logits, loss, label, grads) as numpy, streamed and dropped per chunk
  stored    attacks.features.extract_features: the same, kept in arrays for all n records
  vmap      torch.func functional_call + vmap(grad) over the same layers (alternative design)
  loop      one forward + backward per record (model.zero_grad; loss.backward()), the naive way
  loop-min  one forward + torch.autograd.grad w.r.t. the chosen layers only, per record
  plain     one ordinary batched forward + backward (mean loss, all parameters): the floor
            cost of touching every record once, yielding no per-example gradient
Ratios printed are from this one run. Not a test; needs no data (random inputs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run without installing

from attacks.features import extract_features, gradient_layers, iter_features  # noqa: E402
from fl_sim.models import build_model  # noqa: E402


def batched(model, x, y, layers, chunk):
    # Streamed and dropped chunk by chunk, as the other methods drop their results;
    # extract_features adds one copy into the full-size arrays.
    for _ in iter_features(model, x, y, layers=layers, chunk_size=chunk):
        pass


def stored(model, x, y, layers, chunk):
    extract_features(model, x, y, layers=layers, chunk_size=chunk)


def _chosen_params(model, layers):
    modules = dict(model.named_modules())
    return [p for name in gradient_layers(model, layers) for p in modules[name].parameters(recurse=False)]


def loop(model, x, y, layers, chunk):
    model.eval()
    chosen = _chosen_params(model, layers)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for i in range(len(x)):
        model.zero_grad(set_to_none=True)
        out = model(xt[i:i + 1])
        F.cross_entropy(out, yt[i:i + 1]).backward()  # full backward, as in training code
        _ = [p.grad.clone() for p in chosen]  # keep the chosen layers' gradients
    model.zero_grad(set_to_none=True)


def loop_min(model, x, y, layers, chunk):
    model.eval()
    params = _chosen_params(model, layers)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for i in range(len(x)):
        out = model(xt[i:i + 1])
        torch.autograd.grad(F.cross_entropy(out, yt[i:i + 1]), params)


def vmap_grads(model, x, y, layers, chunk):
    from torch.func import functional_call, grad, vmap
    model.eval()
    modules = dict(model.named_modules())
    names = {f"{m}.{k}" for m in gradient_layers(model, layers) for k, _ in modules[m].named_parameters(recurse=False)}
    params = {k: v.detach() for k, v in model.named_parameters() if k in names}
    rest = {k: v.detach() for k, v in model.named_parameters() if k not in names}
    buffers = dict(model.named_buffers())

    def loss_fn(p, xi, yi):
        out = functional_call(model, (p, rest, buffers), (xi[None],))
        return F.cross_entropy(out, yi[None]), out

    per_example = vmap(grad(loss_fn, has_aux=True), in_dims=(None, 0, 0))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for s in range(0, len(x), chunk):
        per_example(params, xt[s:s + chunk], yt[s:s + chunk])


def plain(model, x, y, layers, chunk):
    model.eval()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for s in range(0, len(x), chunk):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(xt[s:s + chunk]), yt[s:s + chunk]).backward()
    model.zero_grad(set_to_none=True)


METHODS = {"batched": batched, "stored": stored, "vmap": vmap_grads, "loop": loop, "loop-min": loop_min, "plain": plain}


def run_case(label, model, shape, classes, layers, n_batch, n_loop, reps, chunk):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_batch, *shape)).astype(np.float32)
    y = rng.integers(0, classes, n_batch).astype(np.int64)
    sizes = {m: (n_loop if m.startswith("loop") else n_batch) for m in METHODS}
    for m, fn in METHODS.items():  # warm-up (allocator, kernels)
        fn(model, x[:min(sizes[m], 32)], y[:32], layers, chunk)
    times = {m: [] for m in METHODS}
    for _ in range(reps):  # interleaved so drift in machine load hits every method alike
        for m, fn in METHODS.items():
            t = time.perf_counter()
            fn(model, x[:sizes[m]], y[:sizes[m]], layers, chunk)
            times[m].append(time.perf_counter() - t)
    rate = {m: sizes[m] / statistics.median(ts) for m, ts in times.items()}
    print(f"\n{label}  (gradient layers: {layers!r}; batched n={n_batch}, loop n={n_loop}, chunk={chunk})")
    for m in METHODS:
        print(f"  {m:9s} {rate[m]:10.1f} records/s   (median of {reps})")
    best_loop = max(rate["loop"], rate["loop-min"])
    print(f"  batched / loop      = {rate['batched'] / rate['loop']:.1f}x")
    print(f"  batched / loop-min  = {rate['batched'] / rate['loop-min']:.1f}x   "
          f"(vs best loop {rate['batched'] / best_loop:.1f}x)")
    print(f"  stored / best loop  = {rate['stored'] / best_loop:.1f}x")
    print(f"  batched / vmap      = {rate['batched'] / rate['vmap']:.2f}x")
    print(f"  batched / plain     = {rate['batched'] / rate['plain']:.2f}x   (plain fwd+bwd = floor)")
    return rate


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="smaller n, for a smoke run")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    scale = 4 if args.quick else 1
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, reps={args.reps}, "
          f"cpus={os.cpu_count()}, load average at start={os.getloadavg()[0]:.2f}")
    torch.manual_seed(0)
    fc = build_model("fc", (600,), 100)
    torch.manual_seed(0)
    alex = build_model("alexnet", (3, 32, 32), 100)
    run_case("fc 600-1024-512-256-128-100", fc, (600,), 100, "last", 4096 // scale, 256 // scale, args.reps, args.chunk)
    # "all" on fc is 1.3M gradient floats (5 MB) per record: a smaller chunk keeps each
    # chunk's gradients (~330 MB at 64) from thrashing memory.
    run_case("fc 600-1024-512-256-128-100", fc, (600,), 100, "all", 512 // scale, 128 // scale, args.reps,
             min(args.chunk, 64))
    run_case("alexnet CIFAR 3x32x32, 100 classes", alex, (3, 32, 32), 100, "last", 1024 // scale, 128 // scale,
             args.reps, args.chunk)
    print(f"\nload average at end={os.getloadavg()[0]:.2f} (other processes skew absolute rates; ratios are "
          f"interleaved)")


if __name__ == "__main__":
    main()
