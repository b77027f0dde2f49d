"""Every lens on a ResNet-20: time and peak memory of each, over 2,000 digits.

The model is He et al.'s ResNet-20 (3 stages of 3 basic blocks, 16/32/64 channels, BatchNorm;
about 270k parameters) on the 8x8 digits, trained `--train-steps` steps with Adam so that the
lenses look at a minimum rather than at the initialisation. The data are the 1,437 digits of
the training split repeated up to `--samples` (2,000 by default; the dataset has only 1,797
digits, and the test split stays held out for the accuracies). The lenses:

| lens      | what runs                                                                    |
|-----------|------------------------------------------------------------------------------|
| surface   | `landscape.surface` on an 11 x 11 grid of a filter-normalized random plane    |
| hessian   | `hessian.top_eigenvalues`, k=1 (power iteration of Hessian-vector products)  |
| ntk       | `ntk.empirical_ntk(kind="trace")` on the first 200 samples                    |
| geometry  | activations of every representation layer, PCA embedding of the last hidden  |
|           | one, and linear CKA between every pair of layers (the geometry lens's two    |
|           | default views)                                                               |
| levelset  | `levelset.traverse`: 200 steps from one sample toward two others             |
| pruning   | `pruning.sweep` by magnitude at 5 sparsities, no fine-tuning (each cell      |
|           | measured as the lens does: accuracy, corruptions, CKA, flips, sharpness)     |

Each lens runs in a fresh child process, so that its peak memory is its own: on the CPU the
peak is the rise of the child's peak resident set size (`resource.getrusage().ru_maxrss`)
over what loading torch, the model and the data already took; on CUDA it is
`torch.cuda.max_memory_allocated()` above the memory held before the lens. Times are wall
clock and include each lens's one-off costs (a first vmap, a first autograd graph), as a
user meets them. This machine's speed drifts with other work: the load average is printed
before and after.

    python bench/zoo.py [--device cpu|cuda] [--threads N] [--samples 2000] [--train-steps 200]
                        [--lenses surface hessian ...]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import data as datasets  # noqa: E402
from engine.models import ModelSpec, build, count_parameters  # noqa: E402

RESNET20 = ModelSpec(kind="resnet", width=16, depth=3)
SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.99)


# ---------------------------------------------------------------- the lenses (run in a child)


def lens_surface(model, x, y, data):
    from engine import landscape
    d1, d2 = (landscape.random_direction(model, seed=s) for s in (0, 1))
    result = landscape.surface(model, "ce", x, y, d1, d2, xs=np.linspace(-1, 1, 11))
    return f"loss at the centre {result.loss[5, 5]:.3g}, max {result.loss.max():.3g}"


def lens_hessian(model, x, y, data):
    from engine import hessian
    values, _ = hessian.top_eigenvalues(model, "ce", x, y, k=1)
    return f"top eigenvalue {values[0]:.4g}"


def lens_ntk(model, x, y, data):
    from engine import ntk
    kernel = ntk.empirical_ntk(model, x[:200], kind="trace")
    return f"{tuple(kernel.shape)} kernel, trace {float(torch.as_tensor(kernel).trace()):.4g}"


def lens_geometry(model, x, y, data):
    from engine import geometry, recipes
    layers = recipes.representation_layers(model)
    acts = geometry.activations(model, x, layers)
    points = geometry.embed(acts[layers[-2]], method="pca")
    cka = np.array([[geometry.linear_cka(acts[a], acts[b]) for b in layers] for a in layers])
    return f"{len(layers)} layers, embedding {points.shape}, CKA {cka.shape}"


def lens_levelset(model, x, y, data):
    from engine import levelset
    path = levelset.traverse(model, x[[0, 0]], x[[1, 2]], steps=200, bounds=data.bounds,
                             input_shape=data.input_shape)
    return f"path {tuple(path.path.shape)}, final confidence {np.round(path.confidence[-1], 3)}"


def lens_pruning(model, x, y, data):
    from engine import pruning
    result = pruning.sweep(model, data, ["magnitude"], list(SPARSITIES), device=x.device)
    return f"test accuracy by sparsity {np.round(result.accuracy[0], 3).tolist()} (dense {result.dense_accuracy:.3f})"


LENSES = {name[len("lens_"):]: fn for name, fn in globals().items() if name.startswith("lens_")}


# ---------------------------------------------------------------- parent: data, model, children


def bench_data(samples: int) -> datasets.Dataset:
    """The digits with `samples` training samples: the 1,437 of the training split, repeated
    as needed (the dataset has 1,797 in all); the test split stays held out."""
    digits = datasets.load("digits")
    index = torch.arange(samples) % len(digits.x_train)
    return dataclasses.replace(digits, x_train=digits.x_train[index], y_train=digits.y_train[index])


def trained_resnet20(data: datasets.Dataset, steps: int) -> torch.nn.Module:
    """ResNet-20 trained `steps` Adam steps of 128 samples (BatchNorm in training mode)."""
    torch.manual_seed(0)
    model = build(RESNET20, data.input_shape, data.n_outputs).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        index = torch.randint(0, len(data.x_train), (128,))
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(data.x_train[index]), data.y_train[index]).backward()
        optimizer.step()
    return model.eval()


def load_average() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def run_child(lens: str, folder: Path, args) -> dict:
    command = [sys.executable, __file__, "--child", lens, "--folder", str(folder),
               "--device", args.device, "--threads", str(args.threads), "--samples", str(args.samples)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"lens": lens, "error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def parent(args) -> None:
    torch.set_num_threads(args.threads)
    print(f"{load_average()} before; {args.threads} thread(s); device {args.device}")
    data = bench_data(args.samples)
    start = time.perf_counter()
    model = trained_resnet20(data, args.train_steps)
    with torch.no_grad():
        accuracy = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
    print(f"ResNet-20, {count_parameters(model):,} parameters, trained {args.train_steps} steps in "
          f"{time.perf_counter() - start:.1f} s: test accuracy {accuracy:.3f}; "
          f"{len(data.x_train):,} training samples of shape {data.input_shape}")
    with tempfile.TemporaryDirectory() as folder:
        torch.save(model.state_dict(), Path(folder) / "model.pt")
        print(f"\n{'lens':<10}{'wall s':>9}{'cpu s':>9}{'base MiB':>10}{'peak MiB':>10}  result")
        for lens in args.lenses:
            r = run_child(lens, Path(folder), args)
            if "error" in r:
                print(f"{lens:<10}  failed: {r['error']}")
                continue
            print(f"{lens:<10}{r['wall_s']:>9.2f}{r['cpu_s']:>9.2f}{r['base_mib']:>10.1f}{r['peak_mib']:>10.1f}"
                  f"  {r['result']}")
    print(f"\n{load_average()} after")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(args) -> None:
    """Run one lens and print {lens, wall_s, cpu_s, base_mib, peak_mib, result} as one JSON line:
    base_mib is what the child held before the lens (peak RSS, or CUDA memory allocated),
    peak_mib the lens's rise above it (0 when the lens never needed more than the base)."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = bench_data(args.samples).to(device)
    model = build(RESNET20, data.input_shape, data.n_outputs)
    model.load_state_dict(torch.load(Path(args.folder) / "model.pt", weights_only=True))
    model = model.to(device).eval()
    x, y = data.x_train, data.y_train
    with torch.no_grad():
        model(x[:2])  # the first forward's allocations are not the lens's
    if device.type == "cuda":
        torch.cuda.synchronize()
        held = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    before = peak_rss_mib()
    wall, cpu = time.perf_counter(), time.process_time()
    result = LENSES[args.child](model, x, y, data)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - held) / 2**20
    else:
        peak = peak_rss_mib() - before
    base = held / 2**20 if device.type == "cuda" else before
    print(json.dumps({"lens": args.child, "wall_s": wall, "cpu_s": cpu, "base_mib": base, "peak_mib": peak,
                      "result": result}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--samples", type=int, default=2000, help="training samples the lenses use")
    parser.add_argument("--train-steps", type=int, default=200, help="Adam steps before the lenses")
    parser.add_argument("--lenses", nargs="+", choices=list(LENSES), default=list(LENSES))
    parser.add_argument("--child", choices=list(LENSES), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this machine has no CUDA device.")
    child(args) if args.child else parent(args)


if __name__ == "__main__":
    main()
