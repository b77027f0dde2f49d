"""What the sweep mechanism costs a pruning sweep and lottery tickets, against one process.

A small run is trained, then its pruning sweep (4 methods x 4 sparsities, fine-tuned) and its
lottery tickets (rounds with controls) are computed three ways, each into a fresh store:

- in one process: `pruning.sweep` and `pruning.iterative_magnitude` (the baseline);
- as cells on the local backend with one thread (the app's default), and with two threads
  (a round's ticket and control side by side; pruning cells two at a time).

Each cell loads its run, rebuilds the dense reference and the scoring samples and scores its
method again (the in-process sweep scores each method once for all sparsities), and writes its
run: that is the mechanism's cost. Reported as wall time and as a ratio to the baseline, with
the load average before and after; take them on a quiet machine (the lab's benches run under
`flock -x /tmp/cpu.lock`).

    python bench/pruning_cells.py [--quick] [--threads 1]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from engine import pruning, recipes  # noqa: E402
from engine.experiment import Experiment, load_dataset, load_model, train_job  # noqa: E402
from engine.models import ModelSpec  # noqa: E402
from engine.pruning_cells import lottery_job, pruning_sweep_job  # noqa: E402
from engine.store import RunStore  # noqa: E402
from engine.sweep import QuietContext  # noqa: E402
from engine.train import TrainConfig  # noqa: E402

METHODS = ["magnitude", "random", "taylor", "synflow"]
SPARSITIES = [0.5, 0.8, 0.9, 0.95]


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def fresh(source: Path, into: Path) -> RunStore:
    """A copy of the source store: each way starts with no cell computed."""
    shutil.rmtree(into, ignore_errors=True)
    shutil.copytree(source, into)
    return RunStore(into)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny grid: a check, not a measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the cells' own setting on Ray)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    finetune, rounds, steps = (5, 1, 20) if args.quick else (100, 3, 200)
    methods, sparsities = (METHODS[:2], SPARSITIES[:2]) if args.quick else (METHODS, SPARSITIES)
    print(f"load average before: {os.getloadavg()}")
    work = Path(tempfile.mkdtemp(prefix="bench-pruning-cells-"))
    source = RunStore(work / "source")
    experiment = Experiment("moons", {"n": 1000}, ModelSpec(width=64, depth=2),
                            TrainConfig(steps=300, eval_every=100, checkpoint_every=100))
    run_id = train_job(QuietContext(), experiment, store=source, device="cpu")["run_id"]

    def in_process_sweep():
        store = RunStore(source.root)
        model, reference, data = recipes._to_prune(store, run_id, False, finetune)
        settings = pruning.SweepSettings(finetune_steps=finetune,
                                         train_config=recipes._finetune_config(store, run_id, finetune))
        pruning.sweep(model, data, methods, sparsities, settings, device="cpu", reference=reference)

    def in_process_lottery():
        config = Experiment.from_dict(source.settings(run_id)).train
        config = dataclasses.replace(config, steps=steps, eval_every=steps, checkpoint_every=steps)
        pruning.iterative_magnitude(load_model(source, run_id, step=0), load_dataset(source, run_id), rounds, 0.2,
                                    0, config, device="cpu")

    in_process_sweep()  # warm-up: imports, first data, first scores
    results = {"pruning sweep": {"in one process": timed(in_process_sweep)},
               "lottery tickets": {"in one process": timed(in_process_lottery)}}
    for workers in (1, 2):
        store = fresh(source.root, work / f"sweep-{workers}")
        results["pruning sweep"][f"cells, {workers} thread(s)"] = timed(lambda: pruning_sweep_job(
            None, store, run_id, methods, sparsities, finetune_steps=finetune, workers=workers, device="cpu"))
        store = fresh(source.root, work / f"lottery-{workers}")
        results["lottery tickets"][f"cells, {workers} thread(s)"] = timed(lambda: lottery_job(
            None, store, run_id, rounds, 0.2, steps, workers=workers, device="cpu"))
    print(f"load average after: {os.getloadavg()}")
    print(f"pruning sweep: {len(methods)} methods x {len(sparsities)} sparsities, {finetune} fine-tuning steps; "
          f"lottery: {rounds} rounds of {steps} steps with controls; torch threads {args.threads}")
    for what, times in results.items():
        baseline = times["in one process"]
        for how, seconds in times.items():
            print(f"  {what:16s} {how:22s} {seconds:7.2f} s  {seconds / baseline:5.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
