"""Li et al. 2018's contrast, measured: a ResNet with and without skip connections.

Trains the zoo's ResNet (`model.kind` "resnet") and the same network without its shortcuts
("resnet-noskip") alike on the 8x8 digits, then measures both on filter-normalized random
planes (seeds 0 and 1, as the landscape lens draws them) over `--samples` training digits:

| measure            | what it is                                                             |
|--------------------|------------------------------------------------------------------------|
| loss max           | the highest loss on the `--grid` x `--grid` surface over [-span, span]^2 |
| basin              | share of the surface's points below loss 1 (a basin's width)           |
| neg. 2nd diff.     | share of the surface's second differences (along both axes) below 0:   |
|                    | how often it bends down                                                |
| local minima       | grid points lower than their 8 neighbours                              |
| ratio median/share | Li et al.'s convexity map, |lambda_min / lambda_max| of the Hessian at   |
|                    | `--cgrid` x `--cgrid` points of the same plane: its median, and the    |
|                    | share of points above 0.1 (Li et al.'s colour scale runs 0 to 0.5)     |
| ... in the basin   | the same over the map's points whose loss is below 1                   |

`--hessian all` takes the Hessian over every parameter (the lab's convexity map);
`--hessian weights` over the conv and linear weights only, the parameters the random
directions move (Li et al.'s code does this: BatchNorm's scales and the biases stay out).

    python bench/skip_contrast.py [--depth 3] [--width 16] [--steps 1000] [--lr 0.1]
                                  [--samples 500] [--grid 21] [--cgrid 7] [--span 1]
                                  [--hessian all|weights] [--cache DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import data as datasets  # noqa: E402
from engine import hessian, landscape  # noqa: E402
from engine.models import ModelSpec, build, count_parameters  # noqa: E402
from engine.train import TrainConfig, Trainer  # noqa: E402

BASIN_LOSS = 1.0
RATIO_THRESHOLD = 0.1


def load_average() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def trained(kind: str, args, data: datasets.Dataset) -> tuple[torch.nn.Module, dict, float]:
    """The model of `kind` trained as the preset does (or loaded from the cache), its last
    evaluation and the seconds training took."""
    spec = ModelSpec(kind=kind, width=args.width, depth=args.depth)
    model = build(spec, data.input_shape, data.n_outputs)
    config = TrainConfig(optimizer="sgd", lr=args.lr, momentum=0.9, weight_decay=args.weight_decay,
                         batch_size=128, steps=args.steps)
    cache = Path(args.cache) / f"{kind}-d{args.depth}-w{args.width}-s{args.steps}-lr{args.lr}-wd{args.weight_decay}.pt"
    trainer = Trainer(model, data, config, device="cpu", keep_checkpoints=False)
    start = time.perf_counter()
    if cache.exists():
        model.load_state_dict(torch.load(cache, weights_only=True))
    else:
        for _ in range(args.steps):
            trainer.step()
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), cache)
    seconds = time.perf_counter() - start
    return model.eval(), trainer.evaluate(), seconds


def training_subset(data: datasets.Dataset, samples: int):
    """The first `samples` of a fixed shuffle of the training split (as the lens pages pick)."""
    order = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(0))[:samples]
    return data.x_train[order], data.y_train[order]


def roughness(loss: np.ndarray) -> dict:
    """Shape measures of a surface (rows along y, columns along x)."""
    second = np.concatenate([np.diff(loss, 2, axis=0).ravel(), np.diff(loss, 2, axis=1).ravel()])
    padded = np.pad(loss, 1, constant_values=np.inf)
    neighbours = [padded[1 + dy:padded.shape[0] - 1 + dy, 1 + dx:padded.shape[1] - 1 + dx]
                  for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    minima = int(np.sum(np.all([loss < n for n in neighbours], axis=0)))
    return {"loss max": float(loss.max()), "basin": float(np.mean(loss < BASIN_LOSS)),
            "neg. 2nd diff.": float(np.mean(second < 0)), "local minima": minima}


def weights_only(model: torch.nn.Module, hvp):
    """The Hessian restricted to the parameters random directions move: P H P with P the
    projection on them (Lanczos from a start in that subspace stays in it)."""
    moving = set(landscape.random_part(model))
    mask = torch.cat([torch.full((p.numel(),), float(name in moving)) for name, p in model.named_parameters()])
    return lambda v: hvp(v * mask) * mask, mask


def convexity(model, x, y, d1, d2, xs, args) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ratio, lambda_min, lambda_max) at every point of the plane grid xs x xs."""
    if args.hessian == "all":
        result = hessian.convexity_map(model, "ce", x, y, d1, d2,
                                       hessian.ConvexitySettings(xs=tuple(xs), iters=args.iters))
        return result.ratio, result.lambda_min, result.lambda_max
    origin = landscape.parameters(model)
    generator = torch.Generator().manual_seed(0)
    lows, highs = np.zeros((len(xs), len(xs))), np.zeros((len(xs), len(xs)))
    for j, b in enumerate(xs):
        for i, a in enumerate(xs):
            weights = {k: w + a * d1[k] + b * d2[k] for k, w in origin.items()}
            hvp, w = hessian.hvp_function(model, "ce", x, y, weights)
            hvp, mask = weights_only(model, hvp)
            start = torch.randn(int(mask.numel()), generator=generator) * mask
            highs[j, i], lows[j, i] = hessian._extreme_eigenvalues(hvp, start, args.iters, 1e-3)
    return np.abs(lows) / np.maximum(np.abs(highs), 1e-30), lows, highs


def measure(model, x, y, args) -> dict:
    d1, d2 = (landscape.random_direction(model, seed=s) for s in (0, 1))
    xs = np.linspace(-args.span, args.span, args.grid)
    surface = landscape.surface(model, "ce", x, y, d1, d2, xs=xs).loss
    result = roughness(surface)
    cxs = np.linspace(-args.span, args.span, args.cgrid)
    closs = landscape.surface(model, "ce", x, y, d1, d2, xs=cxs).loss
    ratio, low, high = convexity(model, x, y, d1, d2, cxs, args)
    inside = closs < BASIN_LOSS
    result.update({"ratio median": float(np.median(ratio)),
                   f"ratio > {RATIO_THRESHOLD}": float(np.mean(ratio > RATIO_THRESHOLD)),
                   "lambda_min < 0": float(np.mean(low < 0)),
                   "basin points": int(inside.sum()),
                   "basin ratio median": float(np.median(ratio[inside])) if inside.any() else float("nan"),
                   f"basin ratio > {RATIO_THRESHOLD}": float(np.mean(ratio[inside] > RATIO_THRESHOLD))
                   if inside.any() else float("nan"),
                   "centre ratio": float(ratio[len(cxs) // 2, len(cxs) // 2])})
    if args.show_map:
        np.set_printoptions(precision=2, suppress=True, linewidth=160)
        print("ratio map:\n", ratio, "\nloss at its points:\n", closs, "\nlambda_max:\n", high)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depth", type=int, default=3, help="blocks per stage (3: ResNet-20, 9: ResNet-56)")
    parser.add_argument("--width", type=int, default=16, help="channels of the first stage")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--grid", type=int, default=21)
    parser.add_argument("--cgrid", type=int, default=7)
    parser.add_argument("--span", type=float, default=1.0)
    parser.add_argument("--iters", type=int, default=50, help="Lanczos steps per convexity point")
    parser.add_argument("--hessian", choices=("all", "weights"), default="all")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", default="/tmp/skip-contrast-models")
    parser.add_argument("--show-map", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{load_average()} before; {args.threads} thread(s)")
    data = datasets.load("digits")
    x, y = training_subset(data, args.samples)
    rows = {}
    for kind in ("resnet", "resnet-noskip"):
        model, evaluation, seconds = trained(kind, args, data)
        print(f"{kind}: depth {6 * args.depth + 2}, width {args.width}, {count_parameters(model):,} parameters; "
              f"{args.steps} steps in {seconds:.0f} s: train acc {evaluation['train_accuracy']:.3f}, "
              f"test acc {evaluation['test_accuracy']:.3f}, train loss {evaluation['train_loss']:.3g}")
        start = time.perf_counter()
        rows[kind] = measure(model, x, y, args)
        print(f"  measured in {time.perf_counter() - start:.0f} s")
    print(f"\n{'measure':<22}{'skip':>12}{'no skip':>12}")
    for key in rows["resnet"]:
        print(f"{key:<22}{rows['resnet'][key]:>12.3g}{rows['resnet-noskip'][key]:>12.3g}")
    print(f"\n{load_average()} after")


if __name__ == "__main__":
    main()
