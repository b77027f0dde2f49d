"""How fast representation geometry is: UMAP's first use in a new process, and CKA.

UMAP of N x D activations (clustered random data shaped like a hidden layer's) is timed in
fresh subprocesses: first with an empty numba cache (cold: everything compiles), then with
the cache that run filled (warm: what every later process of the app sees). Each child
reports how long importing the engine (torch), `import_umap` and the first fit took. Then
linear, debiased, minibatch and RBF CKA of two N x D matrices are timed in this process.

    python bench/geometry.py [--n 4000] [--features 256] [--warm-rounds 2] [--only umap|cka]

Wall times depend on what else runs on the machine; the load average is printed first, and
each UMAP child's CPU time is given beside its wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# What the child process runs: make the data, then time each stage of the first UMAP.
CHILD = """
import json, sys, time
start = time.perf_counter()
sys.path.insert(0, {root!r})
from bench.geometry import activations_like
from engine import geometry
engine_loaded = time.perf_counter()
X = activations_like({n}, {features})
data_made = time.perf_counter()
geometry.import_umap()
umap_loaded = time.perf_counter()
points = geometry.embed(X, "umap", seed=0)
done = time.perf_counter()
print(json.dumps({{"import engine": engine_loaded - start, "import_umap": umap_loaded - data_made,
                  "first fit": done - umap_loaded, "shape": list(points.shape)}}))
"""


def activations_like(n: int, features: int, n_classes: int = 10, seed: int = 0) -> np.ndarray:
    """(n, features) float32 data shaped like a trained hidden layer: class clusters in a
    16-dimensional latent space, lifted by a random linear map and a tanh."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, 16)) * 2
    latent = centres[rng.integers(n_classes, size=n)] + rng.normal(size=(n, 16))
    return np.tanh(latent @ rng.normal(size=(16, features)) / 4).astype(np.float32)


def first_umap(cache_dir: str, n: int, features: int) -> dict:
    """Run CHILD in a new interpreter with NUMBA_CACHE_DIR=cache_dir; its timings plus the
    wall time of the whole process (interpreter start included)."""
    env = os.environ | {"NUMBA_CACHE_DIR": cache_dir, "PYTHONWARNINGS": "ignore"}
    code = CHILD.format(root=str(ROOT), n=n, features=features)
    cpu_before = _children_cpu()
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    timings = json.loads(result.stdout.strip().splitlines()[-1])
    timings["process"] = time.perf_counter() - start
    timings["cpu"] = _children_cpu() - cpu_before
    return timings


def _children_cpu() -> float:
    """User + system CPU seconds of finished child processes: unlike wall time, not inflated
    when other work shares the cores."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def best_time(fn, repeats: int = 5) -> float:
    """The fastest of `repeats` calls after one warm-up call, in seconds."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def show(label: str, timings: dict) -> None:
    parts = ", ".join(f"{k} {timings[k]:.2f} s" for k in ("import engine", "import_umap", "first fit"))
    print(f"{label:<6} process {timings['process']:6.2f} s, cpu {timings['cpu']:6.2f} s  ({parts})")


def bench_umap(n: int, features: int, warm_rounds: int) -> None:
    print(f"UMAP of {n} x {features}, first use in a new process")
    with tempfile.TemporaryDirectory(prefix="dl-numba-") as cache_dir:
        show("cold", first_umap(cache_dir, n, features))
        warm = [first_umap(cache_dir, n, features) for _ in range(warm_rounds)]
        for timings in warm:
            show("warm", timings)
    print(f"warm median: process {statistics.median(t['process'] for t in warm):.2f} s, "
          f"import_umap + first fit {statistics.median(t['import_umap'] + t['first fit'] for t in warm):.2f} s")


def bench_cka(n: int, features: int) -> None:
    from engine import geometry

    X = activations_like(n, features)
    Y = np.maximum(X @ np.random.default_rng(1).normal(size=(features, features)), 0).astype(np.float32)
    print(f"CKA of two {n} x {features} matrices (float32 in, float64 inside), best of 5")
    for label, fn in [
        ("linear", lambda: geometry.linear_cka(X, Y)),
        ("linear debiased", lambda: geometry.linear_cka(X, Y, debiased=True)),
        ("minibatch (256)", lambda: geometry.minibatch_cka(X, Y, batch=256)),
        ("rbf", lambda: geometry.rbf_cka(X, Y)),
    ]:
        print(f"{label:<16} {best_time(fn) * 1000:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--warm-rounds", type=int, default=2)
    parser.add_argument("--only", choices=["umap", "cka"], help="run one part")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.only in (None, "umap"):
        bench_umap(args.n, args.features, args.warm_rounds)
    if args.only in (None, "cka"):
        bench_cka(args.n, args.features)


if __name__ == "__main__":
    main()
