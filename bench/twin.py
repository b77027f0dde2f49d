"""Training with the linearized twin watched: the kernel twin and the jvp twin against no twin.

The alpha lesson's run (assets/presets/lazy-1-output-scale.json): circle data with 128
points, the centred MLP alpha * (f(w) - f(w0)) of width 128, one hidden layer, NTK
parametrization, full-batch GD with lr 0.2 for 400 steps, measures every 40 steps on 64
probe samples. Four ways, interleaved run by run in one process so the machine's drifting
speed favours none (medians of the repeats):

- plain: no probes;
- lazy: the lazy/rich measures only (watch.lazy);
- kernel twin: the measures and the twin followed through its NTK at w0 (`lazy.KernelTwin`,
  what watch.twin picks for GD);
- jvp twin: the measures and the twin trained by a second `Trainer` through a jvp.

The goal (issue 16): training with the twin at most 1.5x the same run without it. A check
at the end confirms that the two twins end at the same outputs.

    python bench/twin.py [--alpha 10] [--repeats 3] [--threads 0 (torch's default)]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import data as datasets  # noqa: E402
from engine.models import ModelSpec, build  # noqa: E402
from engine.probes import LazyProbe, TwinTrainer  # noqa: E402
from engine.train import TrainConfig, Trainer  # noqa: E402

CONFIG = TrainConfig(optimizer="gd", lr=0.2, steps=400, checkpoint_every=40, eval_every=40)
SAMPLES = 64
WAYS = ("plain", "lazy", "kernel twin", "jvp twin")


def one_run(way: str, alpha: float, data) -> tuple[float, LazyProbe | None]:
    """Seconds to build the probes and train, and the lazy probe (None for the plain run)."""
    model = build(ModelSpec(width=128, depth=1, parametrization="ntk", alpha=alpha), data.input_shape,
                  data.n_outputs)
    start = time.perf_counter()
    trainer = Trainer(model, data, CONFIG, device="cpu")
    probe = None
    if way != "plain":
        twin = {"kernel twin": "kernel", "jvp twin": "jvp"}.get(way)
        probe = LazyProbe(trainer, SAMPLES, TwinTrainer(trainer, twin) if twin else None)
    trainer.run(on_step=probe.after_step if probe else None,
                on_checkpoint=(lambda *_: probe.at_checkpoint(trainer)) if probe else None)
    return time.perf_counter() - start, probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alpha", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = datasets.load("circle", n=128)
    one_run("kernel twin", args.alpha, data)  # warm-up: first-use imports and allocations
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    probes = {}
    for _ in range(args.repeats):
        for way in WAYS:
            seconds, probes[way] = one_run(way, args.alpha, data)
            times[way].append(seconds)
    median = {way: statistics.median(t) for way, t in times.items()}
    print(f"alpha lesson's run, alpha {args.alpha:g}: {CONFIG.steps} GD steps, width 128, "
          f"{len(data.x_train)} training points; medians of {args.repeats}")
    for way in WAYS:
        print(f"  {way:12s} {median[way]:7.3f} s  ({median[way] / median['lazy']:.2f}x lazy, "
              f"{median[way] / median['plain']:.2f}x plain)")
    print(f"kernel twin / jvp twin: {median['kernel twin'] / median['jvp twin']:.2f}x")
    kernel, jvp = probes["kernel twin"].result(), probes["jvp twin"].result()
    gap = float(abs(kernel.twin_loss - jvp.twin_loss).max() / max(abs(jvp.twin_loss).max(), 1e-30))
    print(f"twin losses agree to {gap:.1e} (relative, the largest over checkpoints)")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores, {torch.get_num_threads()} torch threads")


if __name__ == "__main__":
    main()
