"""Li et al. 2018's contrast, measured: a ResNet with and without skip connections.

Trains the two runs of a skip-connection preset (`--preset`, by default the ResNet-56 one:
the zoo's "resnet" and "resnet-noskip", the same network but for its shortcuts) exactly as
the app does, on the 8x8 digits, then measures both on the landscape lens's filter-normalized
random plane (direction seeds 0 and 1) over `--samples` training digits (the lens's subset):

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
| lambda_min < 0     | share of the map's points with any negative curvature at all           |
| ... in the basin   | the same over the map's points whose loss is below 1                   |

`--hessian all` takes the Hessian over every parameter (the lens's convexity map);
`--hessian weights` over the conv and linear weights only, the parameters the random
directions move (Li et al.'s code does this: BatchNorm's scales and the biases stay out).
`--set key=value ...` changes flat settings of both runs (to explore depth, width, the
optimizer); trained models are cached in `--cache` by their settings.

    python bench/skip_contrast.py [--preset resnet56-skip-connections] [--set model.depth=3 ...]
                                  [--samples 500] [--grid 21] [--cgrid 7] [--span 0.25]
                                  [--hessian all|weights] [--plane-seed 0] [--show-map]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import data as datasets  # noqa: E402
from engine import hessian, landscape, presets  # noqa: E402
from engine.experiment import Experiment, build_experiment  # noqa: E402
from engine.models import count_parameters  # noqa: E402
from engine.train import Trainer  # noqa: E402

BASIN_LOSS = 1.0
RATIO_THRESHOLD = 0.1


def load_average() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def preset_runs(key: str, changes: dict[str, str]) -> list[tuple[str, Experiment]]:
    """(name, experiment) of each run of preset `key`, with the flat settings `changes`."""
    preset = next((p for p in presets.all_presets() if p.key == key), None)
    if preset is None:
        raise SystemExit(f"There is no preset '{key}' in {presets.FOLDER}.")
    runs = []
    for run in preset.runs:
        experiment, errors = Experiment.from_flat(run.experiment.to_flat() | changes)
        errors |= experiment.errors()
        if errors:
            raise SystemExit(" ".join(errors.values()))
        runs.append((run.name, experiment))
    return runs


def trained(experiment: Experiment, cache: Path):
    """The experiment's dataset and model trained as the app trains it (or loaded from the
    cache), its last evaluation and the seconds training took."""
    data, model = build_experiment(experiment)
    trainer = Trainer(model, data, experiment.train, device="cpu", base_width=experiment.model.base_width,
                      keep_checkpoints=False)
    flat = json.dumps(experiment.to_flat(), sort_keys=True)
    path = cache / f"{hashlib.sha1(flat.encode()).hexdigest()[:16]}.pt"
    start = time.perf_counter()
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        for _ in range(experiment.train.steps):
            trainer.step()
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    seconds = time.perf_counter() - start
    return data, model.eval(), trainer.evaluate(), seconds


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
                                       hessian.ConvexitySettings(xs=tuple(xs), iters=args.iters, tol=args.tol))
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
            highs[j, i], lows[j, i] = hessian._extreme_eigenvalues(hvp, start, args.iters, args.tol)
    return np.abs(lows) / np.maximum(np.abs(highs), 1e-30), lows, highs


def measure(model, x, y, args) -> dict:
    d1, d2 = (landscape.random_direction(model, seed=s) for s in (args.plane_seed, args.plane_seed + 1))
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
                   "lambda_min median": float(np.median(low)),
                   "lambda_max median": float(np.median(high)),
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
    parser.add_argument("--preset", default="resnet56-skip-connections", help="a preset's key (its file name)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="flat settings for both runs")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--grid", type=int, default=21)
    parser.add_argument("--cgrid", type=int, default=7, help="odd, so that the map has the centre")
    parser.add_argument("--span", type=float, default=0.25)
    parser.add_argument("--plane-seed", type=int, default=0, help="the directions' seeds are this and the next")
    parser.add_argument("--iters", type=int, default=50, help="Lanczos steps per convexity point")
    parser.add_argument("--tol", type=float, default=hessian.ConvexitySettings().tol,
                        help="stop a point's Lanczos run when its extreme Ritz values are within tol times the "
                             "spectrum's size of an eigenvalue (the lens's default); 0 runs all --iters steps")
    parser.add_argument("--hessian", choices=("all", "weights"), default="all")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", default="/tmp/skip-contrast-models")
    parser.add_argument("--show-map", action="store_true")
    args = parser.parse_args()
    if args.cgrid < 3 or args.cgrid % 2 == 0:
        parser.error("--cgrid must be odd and at least 3, so that the map has the minimum at its centre.")
    changes = dict(item.split("=", 1) for item in args.set)
    torch.set_num_threads(args.threads)
    print(f"{load_average()} before; {args.threads} thread(s)")
    rows = {}
    for name, experiment in preset_runs(args.preset, changes):
        data, model, evaluation, seconds = trained(experiment, Path(args.cache))
        print(f"{name}: {count_parameters(model):,} parameters; {experiment.train.steps} steps in {seconds:.0f} s: "
              f"train acc {evaluation['train_accuracy']:.3f}, test acc {evaluation['test_accuracy']:.3f}, "
              f"train loss {evaluation['train_loss']:.3g}")
        x, y = training_subset(data, args.samples)
        start = time.perf_counter()
        rows[experiment.model.kind] = measure(model, x, y, args)
        print(f"  measured in {time.perf_counter() - start:.0f} s")
    print(f"\nspan {args.span}, {args.samples} samples, Hessian over {args.hessian} parameters")
    print(f"{'measure':<22}" + "".join(f"{kind:>15}" for kind in rows))
    for key in next(iter(rows.values())):
        print(f"{key:<22}" + "".join(f"{row[key]:>15.3g}" for row in rows.values()))
    print(f"\n{load_average()} after")


if __name__ == "__main__":
    main()
