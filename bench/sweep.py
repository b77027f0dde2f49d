"""How a sweep scales: a lazy/rich phase diagram on this machine and on Ray.

The grid is output scale alpha x width x seed (5 x 4 x 3 = 60 tiny runs by default), run on
`engine.sweep` in two shapes: one cell per network (60 ordinary runs), and one cell per width
(4 cells, each a width's 15 networks trained as one vmap'd ensemble, as the app's phase
diagram does: `engine.lazy.width_kind`). Each shape runs on the local backend with one thread
(the default) and on an embedded Ray with two workers, the per-network shape also on the local
backend with two threads; each into a fresh run store. For each it reports

- wall time: from submitting the first cell to storing the last, after a warm-up of one
  short cell per worker (imports, first data; reported apart, as is Ray's start-up);
- training share: the time cells spent training (measured inside each cell) over
  wall time x workers, i.e. how busy the workers were with the actual work;
- overhead per cell: wall time x workers minus training time, over the cells, in ms; for
  Ray also the round trip of an empty task (pure scheduling), in ms.

    python bench/sweep.py [--quick] [--steps 300] [--out FILE.json]

--quick runs a 2 x 2 x 1 grid of 20 steps: a check that everything works, not a measurement.
Wall times depend on what else runs on the machine; the load average is printed first.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.experiment import Experiment  # noqa: E402
from engine.lazy import width_cells, width_kind  # noqa: E402
from engine.store import RunStore  # noqa: E402
from engine.sweep import Sweep, grid, run_sweep  # noqa: E402

FULL = {"model.alpha": "0.1,0.3,1,3,10", "model.width": "16,32,64,128", "model.seed": "0,1,2"}
QUICK = {"model.alpha": "0.1,10", "model.width": "16,32", "model.seed": "0"}
FIXED = {"data": "moons", "data.n": "400", "model.depth": "2", "train.optimizer": "sgd", "train.lr": "0.5",
         "train.momentum": "0", "train.loss": "mse", "train.eval_every": "50", "train.checkpoint_every": "100"}


def phase_diagram(quick: bool, steps: int):
    axes = QUICK if quick else FULL
    return grid(FIXED | axes | {"train.steps": str(20 if quick else steps)})


def phase_diagram_by_width(quick: bool, steps: int) -> Sweep:
    """The same grid as one cell per width: each width's alphas x seeds as one ensemble."""
    axes = QUICK if quick else FULL
    experiment, errors = Experiment.from_flat(FIXED | {"train.steps": str(20 if quick else steps)})
    assert not errors, errors
    alphas, widths, seeds = ([float(a) for a in axes["model.alpha"].split(",")],
                             [int(w) for w in axes["model.width"].split(",")],
                             [int(s) for s in axes["model.seed"].split(",")])
    return Sweep(width_cells(experiment, alphas, widths, seeds), kind=width_kind())


def warm_up(backend: str, workers: int) -> float:
    """Seconds to train one 1-step cell per worker: imports, first data and model (paid once
    per worker process, so kept out of the sweep's figures)."""
    cells = grid(FIXED | {"train.steps": "1", "model.seed": ",".join(str(100 + w) for w in range(workers))})
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        run_sweep(cells, RunStore(folder), backend=backend, workers=workers, device="cpu")
        return time.perf_counter() - started


def measure(name: str, sweep, backend: str, workers: int) -> dict:
    """One backend's figures for the whole sweep, trained into a fresh store after a warm-up."""
    warm = warm_up(backend, workers)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        record = run_sweep(sweep, RunStore(folder), backend=backend, workers=workers, device="cpu")
        wall = time.perf_counter() - started
    training = sum(r.seconds for r in record.results)
    busy = wall * workers
    return {"name": name, "cells": len(record.results), "workers": workers, "warm_up_s": round(warm, 2),
            "wall_s": round(wall, 2),
            "training_s": round(training, 2), "training_share": round(training / busy, 3),
            "overhead_ms_per_cell": round(1000 * (busy - training) / len(record.results), 1),
            "statuses": record.counts()}


def empty_task_ms(ray, n: int = 200) -> float:
    """The round trip of a task that does nothing, in ms: Ray's own cost per task."""
    nothing = ray.remote(num_cpus=1)(lambda: None)
    ray.get([nothing.remote() for _ in range(10)])  # warm the workers
    started = time.perf_counter()
    ray.get([nothing.remote() for _ in range(n)])
    return 1000 * (time.perf_counter() - started) / n


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 2 x 2 x 1 grid of 20 steps (a check, not a measurement)")
    parser.add_argument("--steps", type=int, default=300, help="training steps per cell (full run)")
    parser.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    sweep, by_width = phase_diagram(args.quick, args.steps), phase_diagram_by_width(args.quick, args.steps)
    rows = [measure("local, 1 thread", sweep, "local", 1), measure("local, 2 threads", sweep, "local", 2),
            measure("local, 1 thread, widths", by_width, "local", 1)]

    import ray
    started = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray_start = time.perf_counter() - started
    try:
        row = measure("Ray, 2 workers", sweep, "ray", 2)
        row |= {"ray_start_s": round(ray_start, 2), "empty_task_ms": round(empty_task_ms(ray), 2)}
        rows += [row, measure("Ray, 2 workers, widths", by_width, "ray", 2)]
    finally:
        ray.shutdown()

    print(f"{len(sweep.cells)} cells ({' x '.join(sweep.varied)}), {sweep.cells[0]['train.steps']} steps each")
    print(f"{'backend':24} {'cells':>5} {'warm-up s':>9} {'wall s':>8} {'train s':>8} {'share':>6} "
          f"{'overhead ms/cell':>17}")
    for r in rows:
        print(f"{r['name']:24} {r['cells']:5d} {r['warm_up_s']:9.1f} {r['wall_s']:8.1f} {r['training_s']:8.1f} "
              f"{r['training_share']:6.0%} {r['overhead_ms_per_cell']:17.0f}")
    ray_row = next(r for r in rows if "ray_start_s" in r)
    print(f"Ray: start-up {ray_row['ray_start_s']:.1f} s, empty task round trip {ray_row['empty_task_ms']:.2f} ms")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
