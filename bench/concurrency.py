"""Two trainings at once: how much does each slow the other?

The same small experiment is trained through a `JobManager` (worker threads, as the app runs
jobs) into a temporary run store: first alone, then two copies at once (different seeds).
Each run's speed is its steps over its job's wall time (started -> finished). On a machine
with C cores running a CPU-bound step, two runs at once should each keep about
min(1, C / 2) of the speed of one alone; the GIL (tiny models spend much of a step in
Python) can push that towards 1/2 even with many cores.

    python bench/concurrency.py [--steps 3000] [--width 64] [--threads N]

--threads sets torch's threads per process (default: what the app uses, cores - 1).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def experiment(steps: int, width: int, seed: int):
    from engine.experiment import Experiment

    flat = {"data": "moons", "model.width": str(width), "model.seed": str(seed), "train.steps": str(steps),
            "train.eval_every": str(max(1, steps // 10)), "train.checkpoint_every": str(max(1, steps // 5))}
    value, errors = Experiment.from_flat(flat)
    assert not errors, errors
    return value


def steps_per_second(manager, store, experiments) -> list[float]:
    """Train the experiments at once (one job each); each job's steps per wall second."""
    from engine.experiment import train_job

    jobs = [manager.submit(train_job, owner="bench", kind="train", experiment=e, store=store, device="cpu")
            for e in experiments]
    speeds = []
    for job, e in zip(jobs, experiments):
        state = manager.wait(job, "bench")
        assert state.status == "done", (state.status, state.error)
        speeds.append(e.train.steps / (state.finished - state.started))
    return speeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    args = parser.parse_args()

    import torch

    from engine.jobs import JobManager
    from engine.store import RunStore

    torch.set_num_threads(args.threads)
    print(f"{os.cpu_count()} cores, torch threads {args.threads}, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as folder:
        store, manager = RunStore(folder), JobManager(max_workers=2)
        steps_per_second(manager, store, [experiment(200, args.width, 9)])  # warm up: imports, first allocations
        [alone] = steps_per_second(manager, store, [experiment(args.steps, args.width, 0)])
        together = steps_per_second(manager, store, [experiment(args.steps, args.width, s) for s in (1, 2)])
        manager.shutdown()
    print(f"alone: {alone:,.0f} steps/s")
    print(f"two at once: {together[0]:,.0f} and {together[1]:,.0f} steps/s "
          f"(each {together[0] / alone:.2f} and {together[1] / alone:.2f} of alone; "
          f"together {sum(together) / alone:.2f} x the throughput of one)")


if __name__ == "__main__":
    main()
