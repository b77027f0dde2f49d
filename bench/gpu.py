"""The GPU goals of issue 16, each a ratio against its baseline in the same process.

1. Landscape: a 41 x 41 filter-normalized surface of the MLP 40-256-256-256-10 on 4000 MNIST-1D
   samples by `engine.landscape.surface`, against the per-point loop on the same device (the
   weights set in place, one full-batch forward per point, losses left on the device until the
   end, so the loop is not slowed by a host sync per point). Goal on the GPU: at least 20x.
2. The phase diagram (`engine.lazy.phase_diagram`, whose members train as one vmap'd
   `engine.ensemble.EnsembleTrainer` per width) with the Lazy page's default grid on the GPU
   against the same on the CPU. Goal: at least 10x.
3. The full eNTK (N*O x N*O) of that MLP at N=2000 on the GPU. Goal: under a second; the
   ratio is against the CPU at a smaller N, scaled by the N^2 the kernel's work grows with.

On a machine without a GPU the GPU figures are reported as "no GPU: ..." and the CPU
baselines still run (with --quick at small sizes: a 7x7 grid on 1000 samples, 20 GD steps,
N=100), so the script is checked here. The GPU figures always use the full sizes.
Each timing is the median of --rounds runs after a warm-up run (CUDA start-up, kernels'
first use); GPU work is synchronised before the clock is read.

    python bench/gpu.py [--quick] [--rounds 3] [--parts 1 2 3]
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import data as datasets  # noqa: E402
from engine import landscape, lazy, ntk  # noqa: E402
from engine.device import pick  # noqa: E402
from engine.doctor import synchronize  # noqa: E402
from engine.models import ModelSpec, build  # noqa: E402
from engine.train import TrainConfig, Trainer  # noqa: E402

MLP = ModelSpec(kind="mlp", width=256, depth=3, activation="relu")


def median_seconds(fn, device: torch.device, rounds: int) -> tuple[float, object]:
    """The median wall time of `fn()` over `rounds` runs after one warm-up run, and its result."""
    result = fn()
    times = []
    for _ in range(rounds):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def load_avg() -> str:
    try:
        return "load " + " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "load unknown"


def trained_mlp(dataset) -> torch.nn.Module:
    """The MLP after a few hundred Adam steps on the CPU, so the surface has a minimum."""
    model = build(MLP, dataset.input_shape, dataset.n_outputs)
    config = TrainConfig(optimizer="adam", lr=1e-3, steps=300, batch_size=128, eval_every=300, checkpoint_every=300)
    Trainer(model, dataset, config, device="cpu", keep_checkpoints=False).run()
    return model.eval()


# ---------------------------------------------------------------- 1. landscape


def loop_surface(model, x, y, d1, d2, points) -> np.ndarray:
    """The per-point loop: set w + a d1 + b d2 in place, one full-batch forward per point."""
    params = dict(model.named_parameters())
    w = {k: p.detach().clone() for k, p in params.items()}
    losses = []
    with torch.no_grad():
        for a, b in points:
            for k, p in params.items():
                p.copy_(w[k]).add_(d1[k], alpha=float(a)).add_(d2[k], alpha=float(b))
            losses.append(F.cross_entropy(model(x), y))
        for k, p in params.items():
            p.copy_(w[k])
    return torch.stack(losses).cpu().numpy()


def surface_against_loop(model, x, y, n: int, device: torch.device, rounds: int) -> dict:
    model = model.to(device)
    x, y = x.to(device), y.to(device)
    d1, d2 = (landscape.random_direction(model, seed=s) for s in (1, 2))
    xs = np.linspace(-1, 1, n)
    b, a = np.meshgrid(xs, xs, indexing="ij")
    points = np.stack([a.ravel(), b.ravel()], axis=1)
    ours, surface = median_seconds(lambda: landscape.surface(model, "ce", x, y, d1, d2, xs=xs), device, rounds)
    loop, losses = median_seconds(lambda: loop_surface(model, x, y, d1, d2, points), device, rounds)
    agree = float(np.abs(surface.loss.ravel() - losses).max())
    return {"surface s": ours, "loop s": loop, "ratio": loop / ours, "max |difference|": agree}


def bench_landscape(args, dataset, model, gpu) -> None:
    n, samples = (7, 1000) if args.quick else (41, 4000)
    x, y = dataset.x_train[:samples], dataset.y_train[:samples]
    print(f"(1) {n}x{n} surface, MLP 40-256-256-256-10 on {len(x)} MNIST-1D samples, against the per-point loop")
    cpu = surface_against_loop(model, x, y, n, torch.device("cpu"), args.rounds)
    print(f"    cpu: surface {cpu['surface s']:.3f} s, loop {cpu['loop s']:.3f} s: {cpu['ratio']:.1f}x the loop "
          f"(max |difference| {cpu['max |difference|']:.1e})")
    if gpu is None:
        print(f"    no GPU: the goal (at least 20x the loop on the GPU) was not measured; {load_avg()}")
        return
    x, y = dataset.x_train[:4000], dataset.y_train[:4000]
    on = surface_against_loop(model, x, y, 41, gpu, args.rounds)
    verdict = "meets" if on["ratio"] >= 20 else "misses"
    print(f"    {gpu.type} (41x41, {len(x)} samples): surface {on['surface s']:.4f} s, loop {on['loop s']:.4f} s: "
          f"{on['ratio']:.1f}x the loop, {verdict} the goal of 20x (max |difference| {on['max |difference|']:.1e})")


# ---------------------------------------------------------------- 2. phase diagram


def phase_diagram_seconds(dataset, device: torch.device, quick: bool, rounds: int) -> float:
    """The Lazy page's default sweep (alphas 0.01..100, widths 16, 64, 256, NTK parametrization,
    one hidden layer, full-batch GD at lr 0.2, 300 steps), with 3 seeds; --quick: 20 steps."""
    spec = ModelSpec(kind="mlp", depth=1, parametrization="ntk")
    steps = 20 if quick else 300
    config = TrainConfig(optimizer="gd", lr=0.2, steps=steps, eval_every=max(steps // 10, 1), checkpoint_every=steps)
    alphas, widths, seeds = (0.01, 0.1, 1.0, 10.0, 100.0), (16, 64, 256), (0, 1, 2)
    seconds, _ = median_seconds(lambda: lazy.phase_diagram(dataset, spec, config, alphas, widths, seeds,
                                                          device=device), device, rounds)
    return seconds


def bench_phase_diagram(args, gpu) -> None:
    dataset = datasets.load("circle", n=128)
    steps = 20 if args.quick else 300
    print(f"(2) phase diagram on circle (128 points): 5 alphas x widths 16, 64, 256 x 3 seeds, {steps} GD steps")
    cpu = phase_diagram_seconds(dataset, torch.device("cpu"), args.quick, args.rounds)
    print(f"    cpu: {cpu:.2f} s")
    if gpu is None:
        print(f"    no GPU: the goal (at least 10x the CPU) was not measured; {load_avg()}")
        return
    on = phase_diagram_seconds(dataset, gpu, args.quick, args.rounds)
    verdict = "meets" if cpu / on >= 10 else "misses"
    print(f"    {gpu.type}: {on:.2f} s: {cpu / on:.1f}x the CPU, {verdict} the goal of 10x")


# ---------------------------------------------------------------- 3. eNTK


def ntk_seconds(model, x, device: torch.device, rounds: int) -> float:
    model, x = model.to(device), x.to(device)
    seconds, _ = median_seconds(lambda: ntk.empirical_ntk(model, x, kind="full"), device, rounds)
    return seconds


def bench_ntk(args, dataset, model, gpu) -> None:
    n_cpu = 100 if args.quick else 500
    print("(3) full eNTK (N*O x N*O) of the MLP 40-256-256-256-10 on MNIST-1D; goal: N=2000 under 1 s on the GPU")
    cpu = ntk_seconds(model, dataset.x_train[:n_cpu], torch.device("cpu"), args.rounds)
    scaled = cpu * (2000 / n_cpu) ** 2
    print(f"    cpu: N={n_cpu} in {cpu:.3f} s (N=2000 would take about {scaled:.1f} s: the work grows as N^2)")
    if gpu is None:
        print(f"    no GPU: N=2000 on the GPU was not measured; {load_avg()}")
        return
    on = ntk_seconds(model, dataset.x_train[:2000], gpu, args.rounds)
    verdict = "meets" if on < 1.0 else "misses"
    print(f"    {gpu.type}: N=2000 in {on:.3f} s ({scaled / on:.0f}x the CPU's scaled time), {verdict} the goal of 1 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CPU baselines at sizes that take seconds")
    parser.add_argument("--rounds", type=int, default=None, help="timed runs per figure after a warm-up (3; quick 1)")
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3], help="which of 1 2 3")
    args = parser.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    device = pick()
    gpu = device if device.type != "cpu" else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {name}, {load_avg()}"
          f"{', quick' if args.quick else ''}", flush=True)
    parts = set(args.parts)
    if parts & {1, 3}:
        dataset = datasets.load("mnist1d")
        model = trained_mlp(dataset)
    if 1 in parts:
        bench_landscape(args, dataset, model, gpu)
    if 2 in parts:
        bench_phase_diagram(args, gpu)
    if 3 in parts:
        bench_ntk(args, dataset, model, gpu)


if __name__ == "__main__":
    main()
