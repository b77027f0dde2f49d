"""Phase-diagram sweep: the vmap ensemble against training the runs one after another.

The issue's sweep: 5 output scales alpha x 4 widths x 3 seeds of the centred MLP
alpha * (f(w) - f(w0)) on the circle task, SGD, 1000 steps each. For every width the
alphas x seeds (15 networks of one shape) train together as one `EnsembleTrainer`, and then
one after another with `Trainer`, in the same process, with the same evaluation schedule;
the ratio of the two times is the speed-up (goal: at least 3x on CPU). Interleaving by
width keeps this machine's drifting speed from favouring either side. A check at the end
confirms the two ways end at the same weights.

    python bench/lazy.py [--steps 1000] [--widths 16 32 64 128] [--device cpu] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import data as datasets  # noqa: E402
from engine.ensemble import EnsembleTrainer  # noqa: E402
from engine.models import ModelSpec, build  # noqa: E402
from engine.train import TrainConfig, Trainer  # noqa: E402

ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)
SEEDS = (0, 1, 2)


def members(width: int, data, depth: int):
    specs = [ModelSpec(width=width, depth=depth, alpha=a, seed=s) for a in ALPHAS for s in SEEDS]
    return specs, [build(spec, data.input_shape, data.n_outputs) for spec in specs]


def time_ensemble(models, data, config, device) -> tuple[float, EnsembleTrainer]:
    start = time.perf_counter()
    ensemble = EnsembleTrainer(models, data, config, device=device)
    ensemble.run()
    _sync(device)
    return time.perf_counter() - start, ensemble


def time_one_by_one(specs, data, config, device) -> tuple[float, list[Trainer]]:
    start = time.perf_counter()
    trainers = []
    for spec in specs:
        trainer = Trainer(build(spec, data.input_shape, data.n_outputs), data, config, device=device,
                          keep_checkpoints=False)
        trainer.run()
        trainers.append(trainer)
    _sync(device)
    return time.perf_counter() - start, trainers


def weight_gaps(ensemble: EnsembleTrainer, trainers: list[Trainer], specs) -> dict[float, float]:
    """Per alpha, the largest weight difference between a member and the same network trained
    alone, relative to the largest weight of that tensor (members that diverged either way
    are left out). Well-conditioned members agree to float32 rounding; chaotic ones (small
    alpha with a large step) and large alphas (f - f0 cancels digits) amplify rounding."""
    gaps: dict[float, float] = {}
    for m, trainer in enumerate(trainers):
        if ensemble.diverged_at[m] is not None or trainer.diverged_at is not None:
            continue
        mine, theirs = ensemble.member_state(m), trainer.model.state_dict()
        gap = max(float((mine[k] - theirs[k].cpu()).abs().max() / theirs[k].abs().max().clamp_min(1e-12))
                  for k in theirs)
        gaps[specs[m].alpha] = max(gaps.get(specs[m].alpha, 0.0), gap)
    return gaps


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (tiny networks run fastest on one, and a busy machine "
                             "makes more threads wait on each other)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = datasets.load("circle")
    config = TrainConfig(optimizer="sgd", lr=0.05, batch_size=args.batch_size, steps=args.steps)
    count = len(ALPHAS) * len(SEEDS)
    print(f"{len(ALPHAS)} alphas x {len(args.widths)} widths x {len(SEEDS)} seeds, depth {args.depth}, "
          f"{args.steps} steps, batch {args.batch_size}, SGD, circle ({len(data.x_train)} train), "
          f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'width':>6} {'ensemble s':>11} {'one by one s':>13} {'ratio':>6}")
    totals = [0.0, 0.0]
    gaps: dict[float, float] = {}
    # Warm up both paths (first-call costs: imports, kernels) outside the timings.
    specs, models = members(args.widths[0], data, args.depth)
    warm = TrainConfig(optimizer="sgd", lr=0.05, batch_size=args.batch_size, steps=5)
    time_ensemble(models, data, warm, args.device)
    time_one_by_one(specs[:1], data, warm, args.device)
    for width in args.widths:
        specs, models = members(width, data, args.depth)
        together, ensemble = time_ensemble(models, data, config, args.device)
        alone, trainers = time_one_by_one(specs, data, config, args.device)
        totals[0] += together
        totals[1] += alone
        print(f"{width:>6} {together:>11.2f} {alone:>13.2f} {alone / together:>6.1f}")
        for alpha, gap in weight_gaps(ensemble, trainers, specs).items():
            gaps[alpha] = max(gaps.get(alpha, 0.0), gap)
    print(f"{'all':>6} {totals[0]:>11.2f} {totals[1]:>13.2f} {totals[1] / totals[0]:>6.1f}   "
          f"({count * len(args.widths)} runs)")
    print("largest relative weight gap, ensemble vs alone, per alpha: "
          + ", ".join(f"{a:g}: {g:.1e}" for a, g in sorted(gaps.items())))


if __name__ == "__main__":
    main()
