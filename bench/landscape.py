"""Loss-landscape and Hessian speed, against the plain ways of doing the same, in one process.

1. A 51 x 51 surface of a 2-32-32-2 MLP on 500 moons points: `engine.landscape.surface`
   (by its rule, and forced batched / per point) against a lean per-point loop (the weights
   stepped in place, two 250-sample forwards per point). Goal (issue 16): 10x or more.
2. A 41 x 41 filter-normalized surface of the MLP 40-256-256-256-10 on 4000 MNIST-1D samples:
   `surface` against the PyPI package `loss-landscapes` 3.0.6 (its random_plane: the weights
   stepped in place, one full-batch forward per point) when installed. Goal: 1.0x or more.
   Both are also put against the measured sgemm peak: torch.mm products of the same total
   FLOPs (a full forward per point, the FLOPs the peer does).
3. The top Hessian eigenvalue and Hutchinson's trace of that model on the 4000 samples:
   `engine.hessian` against the PyPI package `pyhessian` when installed: time per
   Hessian-vector product and agreement of the eigenvalue.
4. (--parts 4) The crossover of the surface strategies: 2-W-W-2 MLPs for several widths W
   and sample counts, batched against per point, with each one's FLOPs per point: where
   `landscape.PER_POINT_FLOPS` comes from.

This machine's speed drifts with other work on it, so the timed methods are interleaved over
several rounds, the median is reported, and the load average is printed with each figure.
When the load is above the 2 cores, compare with --threads 1: torch's two threads then wait
for each other's core at every operation, and the many small operations of a per-point loop
slow down 10-20x (at load 6: the lean loop of part 1 took 12.8 s with 2 threads, 0.83 s with
one), which makes the 2-thread ratios meaningless. That is OpenMP's default policy, which this
script keeps (it imports torch before the engine): run it with OMP_WAIT_POLICY=PASSIVE, as the
lab runs, to measure what the app does (engine/__init__.py).
The packages are optional, imported only here:
    .venv/bin/pip install loss-landscapes==3.0.6 pyhessian
or, leaving the project's venv as it is, into a folder put on the path for the benchmark only:
    .venv/bin/pip install --no-deps --target /tmp/pyhessian-site pyhessian
    PYTHONPATH=/tmp/pyhessian-site .venv/bin/python bench/landscape.py --parts 3

    python bench/landscape.py [--quick] [--threads N] [--rounds 3] [--clock wall|cpu]
                              [--budget-mb 8] [--parts 1 2 3 4]
"""
from __future__ import annotations

import argparse
import importlib
import os
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


def load() -> str:
    """The 1-minute load average, for the figures it goes with (2 cores: above 2 is crowded)."""
    return f"load {os.getloadavg()[0]:.2f}"


def loop_surface(model, x, y, d1, d2, points, batch: int = LOOP_BATCH) -> np.ndarray:
    """The plain way: for each (a, b) copy w + a d1 + b d2 into the model, loop over batches."""
    params = dict(model.named_parameters())
    w = {k: p.detach().clone() for k, p in params.items()}
    losses = []
    with torch.no_grad():
        for a, b in points:
            for k, p in params.items():  # in place: no fresh weight tensors
                torch.add(w[k], d1[k], alpha=float(a), out=p).add_(d2[k], alpha=float(b))
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


def interleaved(methods: dict, rounds: int) -> tuple[dict, dict, dict]:
    """Run every method once per round, in turn: (results, times, loads) by method name."""
    times = {name: [] for name in methods}
    loads = {name: [] for name in methods}
    results = {}
    for _ in range(rounds):
        for name, run in methods.items():
            results[name], t = timed(run)
            times[name].append(t)
            loads[name].append(os.getloadavg()[0])
    return results, times, loads


def report(times: dict, loads: dict, baseline: str, points: int) -> dict:
    """Print each method's median time and its speed-up over `baseline` (the ratio per round,
    then the median): returns the median speed-ups."""
    speedups = {}
    for name, t in times.items():
        ratios = sorted(b / a for a, b in zip(t, times[baseline]))
        speedups[name] = statistics.median(ratios)
        print(f"    {name:28s} {statistics.median(t):7.3f} s ({points / statistics.median(t):8.0f} "
              f"points/s)  {baseline} / this: {speedups[name]:6.2f}x "
              f"(rounds {', '.join(f'{r:.2f}' for r in ratios)}; load "
              f"{', '.join(f'{v:.1f}' for v in loads[name])})")
    return speedups


def bench_moons(args) -> dict:
    n = 21 if args.quick else 51
    dataset = datasets.load("moons", n=625, test_fraction=0.2)
    x, y = dataset.x_train[:500], dataset.y_train[:500]
    model = trained(SMALL, x, y, dataset.input_shape, 2, steps=300)
    d1, d2 = (landscape.random_direction(model, seed=s) for s in (1, 2))
    xs = np.linspace(-1, 1, n)
    landscape.surface(model, "ce", x, y, d1, d2, xs=xs[:3])  # warm up the allocator
    surface = lambda strategy: lambda: landscape.surface(  # noqa: E731
        model, "ce", x, y, d1, d2, xs=xs, strategy=strategy)
    methods = {"surface (rule)": surface("auto"), "surface, batched": surface("batched"),
               "surface, per point": surface("per point"),
               "lean per-point loop": lambda: loop_surface(model, x, y, d1, d2, grid_points(xs, xs),
                                                           batch=250)}
    print(f"(1) moons, {n}x{n} surface of a 2-32-32-2 MLP on 500 points; median of {args.rounds} "
          f"interleaved rounds; {load()}", flush=True)
    results, times, loads = interleaved(methods, args.rounds)
    speedups = report(times, loads, "lean per-point loop", n * n)
    ours, loop = results["surface (rule)"], results["lean per-point loop"]
    print(f"    rule's route: {ours.settings['points_at_once']}, {ours.settings['points_per_chunk']} "
          f"points per chunk, {ours.settings.get('points_per_pass', 1)} per pass; "
          f"max |difference| to the loop {np.abs(ours.loss.ravel() - loop).max():.1e}; "
          f"goal 10x: {'met' if speedups['surface (rule)'] >= 10 else 'NOT met'}")
    return {"moons speed-up": speedups["surface (rule)"]}


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
        with torch.no_grad():  # a favour to the peer: its own examples build autograd graphs
            return loss_landscapes.random_plane(model, metric, distance=1, steps=steps,
                                                normalization="filter", deepcopy_model=True)

    return run, f"its random_plane on a {steps}x{steps} grid: one full-batch forward per point"


def forward_flops(model, n_samples: int) -> int:
    """FLOPs of one full forward of a chain over n_samples (2 per multiply-add)."""
    return landscape.chain_flops(landscape.linear_chain(model).layers, n_samples)


def sgemm_peak(total_flops: float) -> float:
    """FLOP/s of torch.mm on 4096 x 4096 matrices, repeated to `total_flops` in all."""
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    per_product = 2 * 4096**3
    repeats = max(1, round(total_flops / per_product))
    torch.mm(a, b)  # warm up
    start = CLOCK()
    for _ in range(repeats):
        torch.mm(a, b)
    return repeats * per_product / (CLOCK() - start)


def bench_mnist1d(args, dataset, model) -> dict:
    """The full grid with ours and with loss-landscapes in interleaved rounds, and the
    sgemm peak measured in the same rounds."""
    n = 11 if args.quick else 41
    x, y = dataset.x_train, dataset.y_train
    d1, d2 = (landscape.random_direction(model, seed=s) for s in (1, 2))
    xs = np.linspace(-1, 1, n)
    plane, note = loss_landscapes_plane(model, x, y, n)
    total = n * n * forward_flops(model, len(x))  # what a full forward per point costs
    methods = {"surface (rule)": lambda: landscape.surface(model, "ce", x, y, d1, d2, xs=xs)}
    if plane is not None:
        methods["loss-landscapes 3.0.6"] = plane
    methods["sgemm, same FLOPs"] = lambda: sgemm_peak(total)
    landscape.surface(model, "ce", x, y, d1, d2, xs=xs[:2])  # warm up
    print(f"(2) MNIST-1D, {n}x{n} filter-normalized surface of MLP 40-256-256-256-10 on {len(x)} "
          f"samples ({total / 1e12:.2f} TFLOP as full forwards); median of {args.rounds} "
          f"interleaved rounds; {load()}", flush=True)
    results, times, loads = interleaved(methods, args.rounds)
    peak = statistics.median(results_of(times, total, "sgemm, same FLOPs"))
    baseline = "loss-landscapes 3.0.6" if plane is not None else "surface (rule)"
    speedups = report({k: v for k, v in times.items() if k != "sgemm, same FLOPs"}, loads, baseline,
                      n * n)
    print(f"    sgemm peak {peak / 1e9:.0f} GFLOP/s (median); as a fraction of it, counting a full "
          f"forward per point:")
    for name in speedups:
        print(f"      {name:26s} {total / statistics.median(times[name]) / peak:6.1%}")
    ours = results["surface (rule)"]
    check = loop_surface(model, x, y, d1, d2, grid_points(xs, xs)[:4], batch=len(x))
    print(f"    rule's route: {ours.settings['points_at_once']}; max |difference| to the loop "
          f"{np.abs(ours.loss.ravel()[:4] - check).max():.1e}")
    if plane is None:
        print(f"    loss-landscapes: {note}")
    else:
        print(f"    goal 1.0x loss-landscapes: "
              f"{'met' if speedups['surface (rule)'] >= 1.0 else 'NOT met'}")
    return speedups


def results_of(times: dict, total: float, name: str) -> list:
    """FLOP/s of each round of `name`."""
    return [total / t for t in times[name]]


def bench_crossover(args) -> dict:
    """Batched against per point for 2-W-W-2 MLPs: seconds per grid point of each and their
    ratio, by FLOPs per point (the first layer left out: it is computed once per grid)."""
    print(f"(4) crossover of the strategies: 2-W-W-2 MLPs (inputs 2 or 40), 12x12 grid, median "
          f"of {args.rounds} interleaved rounds; {load()}", flush=True)
    print("    samples  inputs  width   FLOPs/point   batched ms/pt  per point ms/pt  "
          "batched/per point  load")
    xs = np.linspace(-1, 1, 12)
    for n, n_in in ((500, 2), (4000, 40)):
        torch.manual_seed(0)
        x, y = torch.randn(n, n_in), torch.randint(0, 2, (n,))
        for width in (16, 32, 64, 128, 256):
            model = build(ModelSpec(kind="mlp", width=width, depth=2), (n_in,), 2)
            d1, d2 = (landscape.random_direction(model, seed=s) for s in (1, 2))
            methods = {s: (lambda s=s: landscape.surface(model, "ce", x, y, d1, d2, xs=xs, strategy=s))
                       for s in ("batched", "per point")}
            _, times, loads = interleaved(methods, args.rounds)
            t = {s: statistics.median(v) / len(xs) ** 2 for s, v in times.items()}
            flops = forward_flops(model, n) - 2 * n_in * width * n
            print(f"    {n:7d}  {n_in:6d}  {width:5d}  {flops:12.2e}  {1000 * t['batched']:14.3f}  "
                  f"{1000 * t['per point']:15.3f}  {t['batched'] / t['per point']:17.2f}  "
                  f"{statistics.median(loads['batched']):.1f}", flush=True)
    print(f"    rule: per point from {landscape.PER_POINT_FLOPS:.0e} FLOPs per point")
    return {}


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
          f"{args.rounds} rounds of {n} HVPs each; {load()}")
    median = {name: {k: statistics.median(t) for k, t in d.items()} for name, d in per_hvp.items()}
    converged = {}
    for name, run in methods.items():
        top, estimate, _, _ = run(200, 1e-4, 2 * n)
        converged[name] = top
        print(f"    {name:15s} power iteration {1000 * median[name]['eigenvalue']:6.0f} ms/HVP "
              f"({1 / median[name]['eigenvalue']:5.1f} HVP/s, incl. setup), "
              f"Hutchinson {1000 * median[name]['trace']:6.0f} ms/HVP; "
              f"top eigenvalue {top:.4f}, trace {estimate:.1f} ({2 * n} vectors)")
    if ph is None:
        print(f"    pyhessian: {why}")
        return {}
    ours, theirs = median["engine.hessian"], median["pyhessian"]
    ratios = {k: theirs[k] / ours[k] for k in ours}
    top_ours, top_theirs = converged["engine.hessian"], converged["pyhessian"]
    agreement = abs(top_ours - top_theirs) / abs(top_theirs)
    print(f"    time per HVP, pyhessian / ours: power iteration {ratios['eigenvalue']:.2f}, "
          f"Hutchinson {ratios['trace']:.2f}; top eigenvalues differ by {100 * agreement:.3f}%; {load()}")
    return {**ratios, "eigenvalue difference": agreement}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller grids, fewer HVPs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3; quick 1)")
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3],
                        help="which of 1 2 3 4 (4, the crossover, only on request)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall-clock time, or this process's CPU time")
    parser.add_argument("--budget-mb", type=float, default=None,
                        help="landscape.CPU_MEMORY_BUDGET for the surfaces, in MiB")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.budget_mb:
        landscape.CPU_MEMORY_BUDGET = int(args.budget_mb * 2**20)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = set(args.parts)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {args.clock} clock, "
          f"{landscape.CPU_MEMORY_BUDGET / 2**20:g} MiB chunks{', quick' if args.quick else ''}, OpenMP wait "
          f"policy {os.environ.get('OMP_WAIT_POLICY', 'default (spin)')}", flush=True)
    if 1 in parts:
        bench_moons(args)
    if parts & {2, 3}:
        dataset = datasets.load("mnist1d")
        model = trained(LARGE, dataset.x_train, dataset.y_train, dataset.input_shape, 10, steps=300)
    if 2 in parts:
        bench_mnist1d(args, dataset, model)
    if 3 in parts:
        bench_hessian(args, dataset, model)
    if 4 in parts:
        bench_crossover(args)


if __name__ == "__main__":
    main()
