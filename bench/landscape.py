"""Loss-landscape and Hessian speed, against the plain ways of doing the same, in one process.

1. A 51 x 51 surface of a 2-32-32-2 MLP on 500 moons points: `engine.landscape.surface`
   (batched products for a linear chain; also forced onto its generic vmap path) against a
   per-point loop (set the weights, loop over batches of 128). Goal: 10x or more on the CPU.
2. Surfaces of the MLP 40-256-256-256-10 on 4000 MNIST-1D samples: grid points per second of
   `surface`, of the per-point loop (batches of 128, and one full batch) and of the PyPI
   package `loss-landscapes` (one full-batch forward per point) when it is installed, all on
   the same 64 points; then the full 41 x 41 grid with `surface`.
3. The top Hessian eigenvalue and Hutchinson's trace of that model on the 4000 samples:
   `engine.hessian` against the PyPI package `pyhessian` when installed: time per
   Hessian-vector product and agreement of the eigenvalue.

This machine's speed drifts with other work on it, so the timed methods are interleaved over
several rounds and the median is reported. The packages are optional, imported only here:
    .venv/bin/pip install loss-landscapes pyhessian

    python bench/landscape.py [--quick] [--threads N] [--rounds 3] [--baseline-points 64]
                              [--clock wall|cpu] [--budget-mb 8] [--parts 1 2 3]
"""
from __future__ import annotations

import argparse
import importlib
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import data as datasets  # noqa: E402
from engine import hessian, landscape  # noqa: E402
from engine.models import ModelSpec, build  # noqa: E402

SMALL = ModelSpec(kind="mlp", width=32, depth=2, activation="relu")
LARGE = ModelSpec(kind="mlp", width=256, depth=3, activation="relu")
LOOP_BATCH = 128


def trained(spec: ModelSpec, x: torch.Tensor, y: torch.Tensor, input_shape, n_classes: int,
            steps: int) -> torch.nn.Module:
    """A model trained a little with Adam, so that the surface has a minimum to look at."""
    torch.manual_seed(0)
    model = build(spec, input_shape, n_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        index = torch.randint(0, len(x), (128,))
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[index]), y[index]).backward()
        optimizer.step()
    return model.eval()


# Wall-clock time by default; `--clock cpu` counts this process's CPU time instead, which
# leaves out the time spent waiting for a core while other work crowds the machine (with one
# thread it is the work done; with more it also counts threads spinning at barriers).
CLOCK = time.perf_counter


def timed(fn):
    start = CLOCK()
    result = fn()
    return result, CLOCK() - start


# ---------------------------------------------------------------- surfaces


def loop_surface(model, x, y, d1, d2, points, batch: int = LOOP_BATCH) -> np.ndarray:
    """The plain way: for each (a, b) copy w + a d1 + b d2 into the model, loop over batches."""
    params = dict(model.named_parameters())
    w = {k: p.detach().clone() for k, p in params.items()}
    losses = []
    with torch.no_grad():
        for a, b in points:
            for k, p in params.items():
                p.copy_(w[k] + a * d1[k] + b * d2[k])
            total = 0.0
            for s in range(0, len(x), batch):
                output = model(x[s:s + batch])
                total += F.cross_entropy(output, y[s:s + batch], reduction="sum").item()
            losses.append(total / len(x))
        for k, p in params.items():
            p.copy_(w[k])
    return np.array(losses)


def grid_points(xs, ys) -> np.ndarray:
    b, a = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([a.ravel(), b.ravel()], axis=1)


def vmap_only(surface_call):
    """Run a surface with the generic vmap path, as for a model that is not a linear chain."""
    chain = landscape.linear_chain
    landscape.linear_chain = lambda model: None
    try:
        return surface_call()
    finally:
        landscape.linear_chain = chain


def bench_moons(args) -> dict:
    n = 21 if args.quick else 51
    dataset = datasets.load("moons", n=625, test_fraction=0.2)
    x, y = dataset.x_train[:500], dataset.y_train[:500]
    model = trained(SMALL, x, y, dataset.input_shape, 2, steps=300)
    d1, d2 = (landscape.random_direction(model, seed=s) for s in (1, 2))
    xs = np.linspace(-1, 1, n)
    landscape.surface(model, "ce", x, y, d1, d2, xs=xs[:3])  # warm up vmap and the allocator
    surface = lambda: landscape.surface(model, "ce", x, y, d1, d2, xs=xs)  # noqa: E731
    methods = {"surface": surface, "surface, vmap path": lambda: vmap_only(surface),
               "per-point loop": lambda: loop_surface(model, x, y, d1, d2, grid_points(xs, xs))}
    times = {name: [] for name in methods}
    results = {}
    for _ in range(args.rounds):
        for name, run in methods.items():
            results[name], t = timed(run)
            times[name].append(t)
    ratios = {name: sorted(b / a for a, b in zip(times[name], times["per-point loop"]))
              for name in ("surface", "surface, vmap path")}
    print(f"(1) moons, {n}x{n} surface of a 2-32-32-2 MLP on 500 points; "
          f"median of {args.rounds} rounds")
    for name, t in times.items():
        t = statistics.median(t)
        print(f"    {name:20s} {t:7.2f} s   ({n * n / t:8.0f} points/s)")
    for name, r in ratios.items():
        print(f"    speed-up of the {name} over the loop: median {statistics.median(r):.1f}x "
              f"(rounds: {', '.join(f'{v:.1f}' for v in r)})")
    ours, loop = results["surface"], results["per-point loop"]
    print(f"    {ours.settings['points_per_chunk']} points per chunk; max |difference| "
          f"{np.abs(ours.loss.ravel() - loop).max():.1e}")
    return {"moons speed-up": statistics.median(ratios["surface"])}


def loss_landscapes_plane(model, x, y, steps: int):
    """A function running `loss_landscapes.random_plane` on a steps x steps grid, or the
    reason it cannot run."""
    try:
        import loss_landscapes
        import loss_landscapes.metrics
    except Exception as error:  # not installed, or broken by a newer torch
        return None, f"not importable ({type(error).__name__}: {error})"
    metric = loss_landscapes.metrics.Loss(F.cross_entropy, x, y)

    def run():
        with torch.no_grad():
            return loss_landscapes.random_plane(model, metric, distance=1, steps=steps,
                                                normalization="filter", deepcopy_model=True)

    return run, f"its random_plane on a {steps}x{steps} grid: one full-batch forward per point"


def bench_mnist1d(args, dataset, model) -> dict:
    """Points per second of each method on the same points, in interleaved rounds (this
    machine's speed drifts), then the full grid once with ours."""
    n = 11 if args.quick else 41
    x, y = dataset.x_train, dataset.y_train
    d1, d2 = (landscape.random_direction(model, seed=s) for s in (1, 2))
    xs = np.linspace(-1, 1, n)
    steps = max(2, int(math.sqrt(args.baseline_points)))
    subset = grid_points(xs, xs)[:steps * steps]
    sub_xs = np.linspace(-1, 1, steps)  # a steps x steps grid, as many points as the subset
    plane, note = loss_landscapes_plane(model, x, y, steps)
    methods = {
        "surface": lambda: landscape.surface(model, "ce", x, y, d1, d2, xs=sub_xs),
        "per-point loop, batch 128": lambda: loop_surface(model, x, y, d1, d2, subset),
        "per-point loop, full batch": lambda: loop_surface(model, x, y, d1, d2, subset, len(x)),
    }
    if plane is not None:
        methods["loss-landscapes"] = plane
    landscape.surface(model, "ce", x, y, d1, d2, xs=xs[:2])  # warm up
    rates = {name: [] for name in methods}
    for _ in range(args.rounds):
        for name, run in methods.items():
            rates[name].append(len(subset) / timed(run)[1])
    rate = {name: statistics.median(r) for name, r in rates.items()}
    full, t_full = timed(lambda: landscape.surface(model, "ce", x, y, d1, d2, xs=xs))
    check = loop_surface(model, x, y, d1, d2, grid_points(xs, xs)[:4], batch=len(x))
    print(f"(2) MNIST-1D, MLP 40-256-256-256-10 on {len(x)} samples; median of {args.rounds} "
          f"rounds on {len(subset)} grid points")
    for name, r in rate.items():
        print(f"    {name:27s} {r:7.1f} points/s   (ours / this: {rate['surface'] / r:.2f})")
    if plane is None:
        print(f"    loss-landscapes: {note}")
    else:
        print(f"    (loss-landscapes: {note})")
    print(f"    full {n}x{n} grid with ours: {n * n / t_full:.1f} points/s ({t_full:.1f} s; batch "
          f"{full.settings['batch_size']}, {full.settings['points_per_chunk']} points per chunk); "
          f"max |difference| to the loop {np.abs(full.loss.ravel()[:4] - check).max():.1e}")
    return rate


# ---------------------------------------------------------------- Hessian


def ours_top_and_trace(model, x, y, iters: int, tol: float, samples: int):
    """(top eigenvalue, trace estimate, seconds for the eigenvalue, seconds for the trace)."""
    (values, _), t_eig = timed(lambda: hessian.top_eigenvalues(model, "ce", x, y, iters=iters,
                                                               tol=tol))
    estimate, t_trace = timed(lambda: hessian.trace(model, "ce", x, y, samples=samples))
    return values[0], estimate, t_eig, t_trace


def pyhessian_top_and_trace(ph, model, x, y, iters: int, tol: float, samples: int):
    """The same with pyhessian, given all the data as one batch (it then builds the gradient's
    graph once, and each HVP is one backward pass through it, as ours does)."""
    torch.manual_seed(0)
    try:
        start = CLOCK()
        computer = ph.hessian(model, F.cross_entropy, data=(x, y), cuda=False)
        values, _ = computer.eigenvalues(maxIter=iters, tol=tol, top_n=1)
        t_eig = CLOCK() - start
        # tol=0 runs exactly `samples` HVPs (its stopping test is a strict "< tol")
        estimate, t_trace = timed(lambda: float(np.mean(computer.trace(maxIter=samples, tol=0.0))))
        return values[0], estimate, t_eig, t_trace
    finally:
        model.zero_grad(set_to_none=True)  # it leaves graph-carrying .grad fields behind


def bench_hessian(args, dataset, model) -> dict:
    """Time per HVP with a fixed number of HVPs (tol 0) in interleaved rounds, then the
    eigenvalues both give when run to tol 1e-4."""
    x, y = dataset.x_train, dataset.y_train
    n = 5 if args.quick else 20  # HVPs per eigenvalue run and per trace, in the timed rounds
    try:  # the module: the package's attribute `pyhessian.hessian` is the class, not it
        ph = importlib.import_module("pyhessian.hessian")
        why = ""
    except Exception as error:
        ph, why = None, f"not importable ({type(error).__name__}: {error})"
    hessian.top_eigenvalues(model, "ce", x[:100], y[:100], iters=2)  # warm up torch.func
    methods = {"engine.hessian": lambda *a: ours_top_and_trace(model, x, y, *a)}
    if ph is not None:
        methods["pyhessian"] = lambda *a: pyhessian_top_and_trace(ph, model, x, y, *a)
    per_hvp = {name: {"eigenvalue": [], "trace": []} for name in methods}
    for _ in range(args.rounds):
        for name, run in methods.items():
            _, _, t_eig, t_trace = run(n, 0.0, n)
            per_hvp[name]["eigenvalue"].append(t_eig / n)
            per_hvp[name]["trace"].append(t_trace / n)
    print(f"(3) Hessian of MLP 40-256-256-256-10 on {len(x)} MNIST-1D samples "
          f"({sum(p.numel() for p in model.parameters()):,} parameters); median of "
          f"{args.rounds} rounds of {n} HVPs each")
    median = {name: {k: statistics.median(t) for k, t in d.items()} for name, d in per_hvp.items()}
    converged = {}
    for name, run in methods.items():
        top, estimate, _, _ = run(200, 1e-4, 2 * n)
        converged[name] = top
        print(f"    {name:15s} power iteration {1000 * median[name]['eigenvalue']:6.0f} ms/HVP "
              f"(incl. setup), Hutchinson {1000 * median[name]['trace']:6.0f} ms/HVP; "
              f"top eigenvalue {top:.4f}, trace {estimate:.1f} ({2 * n} vectors)")
    if ph is None:
        print(f"    pyhessian: {why}")
        return {}
    ours, theirs = median["engine.hessian"], median["pyhessian"]
    ratios = {k: theirs[k] / ours[k] for k in ours}
    top_ours, top_theirs = converged["engine.hessian"], converged["pyhessian"]
    agreement = abs(top_ours - top_theirs) / abs(top_theirs)
    print(f"    time per HVP, pyhessian / ours: power iteration {ratios['eigenvalue']:.2f}, "
          f"Hutchinson {ratios['trace']:.2f}; top eigenvalues differ by {100 * agreement:.3f}%")
    return {**ratios, "eigenvalue difference": agreement}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller grids, fewer HVPs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--baseline-points", type=int, default=None,
                        help="grid points the MNIST-1D methods are compared on (64; quick 16)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3; quick 1)")
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3], help="which of 1 2 3")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall-clock time, or this process's CPU time")
    parser.add_argument("--budget-mb", type=float, default=None,
                        help="landscape.CPU_MEMORY_BUDGET for the surfaces, in MiB")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.budget_mb:
        landscape.CPU_MEMORY_BUDGET = int(args.budget_mb * 2**20)
    args.baseline_points = args.baseline_points or (16 if args.quick else 64)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = set(args.parts)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {args.clock} clock, "
          f"{landscape.CPU_MEMORY_BUDGET / 2**20:g} MiB chunks{', quick' if args.quick else ''}",
          flush=True)
    if 1 in parts:
        bench_moons(args)
    if parts & {2, 3}:
        dataset = datasets.load("mnist1d")
        model = trained(LARGE, dataset.x_train, dataset.y_train, dataset.input_shape, 10, steps=300)
    if 2 in parts:
        bench_mnist1d(args, dataset, model)
    if 3 in parts:
        bench_hessian(args, dataset, model)


if __name__ == "__main__":
    main()
