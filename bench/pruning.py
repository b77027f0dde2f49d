"""How long a pruning sweep takes, and what its scores cost.

A `digits` MLP (64-128-128-10, ReLU) is trained dense, then `engine.pruning.sweep` prunes it
by 6 methods at 8 sparsities and fine-tunes every cell 200 steps (Adam, batch 64). Reported:
the total time and its shares (scoring and mask making, fine-tuning, measuring), the test
accuracy of every cell, and the cost of each data-dependent score against one forward and
backward pass over the same scoring batch (512 samples), and of the sharpness the sweep
measures on every pruned model.

    python bench/pruning.py [--quick] [--device cpu] [--threads 2]

--quick uses 4 sparsities and 50 fine-tuning steps. Wall times depend on what else runs on
the machine; the load average is printed first.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import data as datasets  # noqa: E402
from engine import pruning  # noqa: E402
from engine.models import ModelSpec, build  # noqa: E402
from engine.train import TrainConfig, Trainer  # noqa: E402

SPEC = ModelSpec(kind="mlp", width=128, depth=2, activation="relu")
METHODS = ("random", "magnitude", "taylor", "grasp", "synflow", "oba")
SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99)
QUICK_SPARSITIES = (0.5, 0.8, 0.9, 0.97)
COSTED = {"taylor": {}, "snip": {}, "grasp": {}, "oba": {}, "obd": {"samples": 100},
          "synflow": {}}  # score -> options, timed against one forward + backward


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_dense(data, device, steps: int):
    model = build(SPEC, data.input_shape, data.n_classes)
    config = TrainConfig(optimizer="adam", lr=1e-3, steps=steps, eval_every=steps,
                         checkpoint_every=steps)
    Trainer(model, data, config, device=device, keep_checkpoints=False).run()
    return model


def score_costs(model, x, y) -> None:
    def forward_backward():
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()

    base = median_seconds(forward_backward, 20)
    print(f"\nscore cost on {len(x)} samples against one forward+backward "
          f"({base * 1000:.2f} ms), median of 5")
    for method, options in COSTED.items():
        seconds = median_seconds(lambda: pruning.scores(model, method, x, y, **options), 5)
        print(f"  {method:<9} {seconds * 1000:8.1f} ms  = {seconds / base:6.1f} x forward+backward"
              + (f"  ({options})" if options else ""))
    # the sweep measures every pruned model's sharpness: its share of "measuring"
    seconds = median_seconds(lambda: pruning.top_eigenvalue(model, x, y, iters=pruning.SHARPNESS_ITERS), 5)
    print(f"  sharpness {seconds * 1000:8.1f} ms  = {seconds / base:6.1f} x forward+backward  "
          f"({pruning.SHARPNESS_ITERS} power iterations, measured on every model of a sweep)")


def report(result, total: float) -> None:
    scoring, finetuning = result.scoring_seconds.sum(), result.finetune_seconds.sum()
    rest = total - scoring - finetuning
    print(f"\nsweep {len(result.methods)} methods x {len(result.sparsities)} sparsities, "
          f"{result.settings['finetune_steps']} fine-tuning steps each: {total:.1f} s")
    for label, seconds in (("scoring + masks", scoring), ("fine-tuning", finetuning),
                           ("measuring + copies", rest)):
        print(f"  {label:<19} {seconds:7.2f} s  {seconds / total:6.1%}")
    print("  scoring per method: " + ", ".join(
        f"{m} {s:.2f} s" for m, s in zip(result.methods, result.scoring_seconds.sum(1))))
    print(f"\ntest accuracy after fine-tuning (dense {result.dense_accuracy:.3f}; "
          f"corrupted mean {result.dense_corrupted_accuracy:.3f})")
    print(f"  {'sparsity':<10}" + "".join(f"{s:>7.0%}" for s in result.sparsities))
    for i, method in enumerate(result.methods):
        print(f"  {method:<10}" + "".join(f"{a:7.3f}" for a in result.accuracy[i]))
    print("  corrupted mean")
    for i, method in enumerate(result.methods):
        print(f"  {method:<10}" + "".join(f"{a:7.3f}" for a in result.corrupted_accuracy[i]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 sparsities, 50 fine-tuning steps")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=1500)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads, device {args.device}")
    data = datasets.load("digits").to(args.device)
    start = time.perf_counter()
    model = train_dense(data, args.device, args.train_steps)
    accuracy = pruning.evaluate(model, data.x_test, data.y_test)[0]
    print(f"dense {SPEC.width}x{SPEC.depth} MLP trained {args.train_steps} steps in "
          f"{time.perf_counter() - start:.1f} s: test accuracy {accuracy:.3f}")
    score_costs(model, *pruning.score_batch(data))
    sparsities = QUICK_SPARSITIES if args.quick else SPARSITIES
    steps = 50 if args.quick else 200
    start = time.perf_counter()
    result = pruning.sweep(model, data, METHODS, sparsities, pruning.SweepSettings(finetune_steps=steps))
    report(result, time.perf_counter() - start)


if __name__ == "__main__":
    main()
