"""Trainer overhead: steps per second of the lab's trainer, with live metrics and reports on,
against a bare PyTorch loop, in the same process.

MLP 40-256-256-256-10 on MNIST-1D, batch 128, Adam. The two are interleaved over several
rounds and the median ratio is reported, since this machine's speed drifts between runs.

    python bench/train.py [--steps 300] [--rounds 5] [--device cpu]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import data as datasets  # noqa: E402
from engine.experiment import LiveReport  # noqa: E402
from engine.models import ModelSpec, build  # noqa: E402
from engine.train import TrainConfig, Trainer  # noqa: E402

SPEC = ModelSpec(kind="mlp", width=256, depth=3, activation="relu")


class QuietContext:
    cancelled = False

    def report(self, progress=None, message=None, **partial):
        pass


def bare_loop(data, steps: int, device) -> float:
    """Steps per second of the plainest loop: random batches, forward, backward, step."""
    model = build(SPEC, data.input_shape, data.n_outputs).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = data.x_train.to(device), data.y_train.to(device)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        index = torch.randint(0, len(x), (128,), generator=generator).to(device)
        loss = F.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return steps / (time.perf_counter() - start)


def lab_trainer(data, steps: int, device) -> float:
    """Steps per second of `Trainer.run` with the defaults' evaluation and live reports."""
    model = build(SPEC, data.input_shape, data.n_outputs)
    config = TrainConfig(optimizer="adam", lr=1e-3, batch_size=128, steps=steps)
    trainer = Trainer(model, data, config, device=device)
    live = LiveReport(QuietContext(), trainer, steps)

    def should_stop() -> bool:
        live.tick()
        return False

    start = time.perf_counter()
    trainer.run(should_stop=should_stop)
    _sync(device)
    return steps / (time.perf_counter() - start)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    data = datasets.load("mnist1d")
    bare_loop(data, 20, args.device), lab_trainer(data, 20, args.device)  # warm up
    ratios = []
    for round in range(args.rounds):
        bare = bare_loop(data, args.steps, args.device)
        lab = lab_trainer(data, args.steps, args.device)
        ratios.append(lab / bare)
        print(f"round {round + 1}: bare {bare:7.1f} steps/s  lab {lab:7.1f} steps/s  ratio {lab / bare:.3f}")
    median = statistics.median(ratios)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}")
    print(f"median lab/bare speed: {median:.3f} (overhead {100 * (1 / median - 1):.1f}%)")


if __name__ == "__main__":
    main()
