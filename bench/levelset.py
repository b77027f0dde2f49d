"""How much faster B level-set traversals run as one batch than one pair at a time.

Trains a digits MLP briefly (Adam), picks correctly classified test images as sources and
test images of other classes as targets, then runs `engine.levelset.traverse` on all pairs
as one batch and on each pair alone (sequentially, in the same process), and reports both
wall times, the speed-up, and what the traversals reached (acceptance, confidence drop,
distance and SSIM to the target). The batched and the one-by-one paths are compared too.

    python bench/levelset.py [--pairs 64] [--steps 200] [--train-steps 300] [--threads 1]
                             [--device cpu|cuda] [--repeats 3]

Wall times depend on what else runs on the machine; the load average is printed first.
The best of `--repeats` runs is reported for each way.
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
from engine import levelset  # noqa: E402
from engine.models import ModelSpec, build  # noqa: E402
from engine.train import TrainConfig, Trainer  # noqa: E402


def trained_digits_mlp(steps: int, device: str):
    """A width-64, depth-2 ReLU MLP trained on digits with Adam; returns (model, data, seconds)."""
    data = datasets.load("digits")
    model = build(ModelSpec(width=64, depth=2), data.input_shape, data.n_classes)
    trainer = Trainer(model, data, TrainConfig(optimizer="adam", lr=3e-3, steps=steps,
                                               eval_every=steps, checkpoint_every=steps),
                      device=device, keep_checkpoints=False)
    start = time.perf_counter()
    trainer.run()
    return model.eval(), trainer.data, time.perf_counter() - start, trainer.evaluate()


def pairs(model, data, n: int, seed: int = 0):
    """n (source, target) test images: sources correctly classified, targets of another class."""
    with torch.no_grad():
        correct = (model(data.x_test).argmax(1) == data.y_test).nonzero().squeeze(1)
    rng = np.random.default_rng(seed)
    sources = correct[torch.as_tensor(rng.choice(len(correct), n, replace=False))]
    targets = []
    for i in sources.tolist():
        others = (data.y_test != data.y_test[i]).nonzero().squeeze(1)
        targets.append(others[int(rng.integers(len(others)))])
    return data.x_test[sources], data.x_test[torch.stack(targets)]


def best_time(run, repeats: int, device: str):
    """(best wall seconds over repeats, the last run's result)."""
    times, result = [], None
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = run()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
          f"torch {torch.__version__}, {args.threads} thread(s), device {args.device}")

    model, data, train_seconds, scores = trained_digits_mlp(args.train_steps, args.device)
    print(f"trained {args.train_steps} Adam steps in {train_seconds:.2f} s: "
          f"test accuracy {scores['test_accuracy']:.3f}")
    sources, targets = pairs(model, data, args.pairs)
    settings = dict(steps=args.steps, bounds=data.bounds, input_shape=data.input_shape)

    batched_time, batch = best_time(lambda: levelset.traverse(model, sources, targets, **settings),
                                    args.repeats, args.device)
    one_time, singles = best_time(
        lambda: [levelset.traverse(model, s, t, **settings) for s, t in zip(sources, targets)],
        args.repeats, args.device)
    difference = max(np.abs(batch.path[:, i] - one.path).max() for i, one in enumerate(singles))

    print(f"\n{args.pairs} pairs x {args.steps} steps "
          f"(eta {batch.settings['step_size']}, eps {batch.settings['eps']}, "
          f"threshold {batch.settings['threshold']}):")
    print(f"  batched        {batched_time:8.3f} s  ({1e3 * batched_time / args.steps:.2f} ms per step)")
    print(f"  one at a time  {one_time:8.3f} s  ({1e3 * one_time / (args.steps * args.pairs):.2f} ms per pair-step)")
    print(f"  speed-up       {one_time / batched_time:8.1f} x")
    print(f"  largest difference between batched and one-by-one paths: {difference:.2e}")
    drop = (batch.confidence[0] - batch.confidence).max(axis=0)
    print("\nwhat the traversals reached (mean over pairs):")
    print(f"  accepted steps         {batch.accepted.mean():.1%}")
    print(f"  source confidence      {batch.confidence[0].mean():.4f} -> {batch.confidence[-1].mean():.4f} "
          f"(largest drop {drop.max():.4f})")
    print(f"  l2 to the target       {batch.l2[0].mean():.3f} -> {batch.l2[-1].mean():.3f}")
    print(f"  l_inf to the target    {batch.linf[0].mean():.3f} -> {batch.linf[-1].mean():.3f}")
    print(f"  SSIM to the target     {batch.ssim[0].mean():.3f} -> {batch.ssim[-1].mean():.3f}")
    with torch.no_grad():
        ends = torch.as_tensor(batch.path[-1], device=args.device)
        still = (model(ends).argmax(1).cpu().numpy() == batch.source_class).mean()
    print(f"  end points still classified as the source class: {still:.1%}")


if __name__ == "__main__":
    main()
