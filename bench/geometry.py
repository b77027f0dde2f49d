"""How fast representation geometry is: PCA, UMAP's first use in a new process, CKA, the page.

PCA of float32 activations against `torch.pca_lowrank` (the same centring and number of
components) in this process, interleaved --repeats times per shape, medians: at its defaults
(two power iterations) and at matched accuracy (its niter raised until its score subspace is
within 1e-6 rad of the exact one; an exact method against an inexact one at its defaults is
no fair comparison either way), with each one's largest principal angle to numpy's float64
SVD (pca_lowrank is randomized, so approximate; ours is exact).

UMAP's first use in a fresh process: UMAP of N x D activations (clustered random data
shaped like a hidden layer's) for each N of --umap-sizes (500: the page's samples; 4000: the
largest that takes exact neighbours) in new interpreters: first with an empty numba cache
(cold: everything compiles, what a machine's very first start pays), then --rounds times with
the cache that run filled (warm: what every later process sees; medians), and last after the
warm-up the app's server does at its start (server: what a page waits for). Each child
reports how long importing the engine (torch) and its first `embed(X, "umap")` took. With
--baseline REV the same is run, interleaved, for the lab at git revision REV (its own cache),
and the medians are given as ratios baseline / this tree. Then
linear, debiased, minibatch and RBF CKA of two N x D matrices are timed in this process.

The page: a digits MLP is trained with 20 checkpoints into a temporary run store, and each
analysis the geometry page runs (its default settings) is timed as a recipe, then each
figure; the baseline is the plain cost of reading that run's representations (load every
checkpoint, one forward pass of the samples with hooks), so the ratios say how much an
analysis costs beyond what any look at the representations must pay. Last, the page itself
in Streamlit's AppTest: from opening until every chart is drawn (cold: the analyses run as
jobs) and again with every analysis stored (warm: what a revisit costs).

    python bench/geometry.py [--n 4000] [--features 256] [--only pca|umap|cka|page]
                             [--umap-sizes 500,4000] [--rounds 3] [--baseline REV]

Wall times depend on what else runs on the machine; the load average is printed first and
last, and each UMAP child's CPU time is given beside its wall time (the whole process's, and
its first UMAP's: umap's import and the fit run on one core, except torch's neighbour search on
all, so on a quiet machine the first UMAP takes at most its CPU time).
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

# What the child process runs: make the data, then time importing the engine and the first
# `embed(X, "umap")` (which imports umap unless the server's warm-up did). The data comes from
# this tree's bench; the engine from `root` (this tree or a baseline's).
CHILD = """
import json, sys, time
sys.path.insert(0, {bench_root!r})
from bench.geometry import activations_like
X = activations_like({n}, {features})
start = time.perf_counter()
sys.path.insert(0, {root!r})
from engine import geometry
engine_loaded = time.perf_counter()
if {server}:
    geometry.warm_up_umap()
umap_loaded, cpu_before = time.perf_counter(), time.process_time()
points = geometry.embed(X, "umap", seed=0)
done, cpu_after = time.perf_counter(), time.process_time()
print(json.dumps({{"import engine": engine_loaded - start, "server warm-up": umap_loaded - engine_loaded,
                  "first UMAP": done - umap_loaded, "first UMAP cpu": cpu_after - cpu_before,
                  "shape": list(points.shape)}}))
"""


def activations_like(n: int, features: int, n_classes: int = 10, seed: int = 0) -> np.ndarray:
    """(n, features) float32 data shaped like a trained hidden layer: class clusters in a
    16-dimensional latent space, lifted by a random linear map and a tanh."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, 16)) * 2
    latent = centres[rng.integers(n_classes, size=n)] + rng.normal(size=(n, 16))
    return np.tanh(latent @ rng.normal(size=(16, features)) / 4).astype(np.float32)


def first_umap(cache_dir: str, n: int, features: int, server: bool = False, root: Path = ROOT) -> dict:
    """Run CHILD in a new interpreter with NUMBA_CACHE_DIR=cache_dir and the lab at `root`;
    its timings plus the wall time of the whole process (interpreter start included). With
    `server`, the child first does what the app's server does at start (`warm_up_umap`), so
    its first UMAP is what a page waits for."""
    env = os.environ | {"NUMBA_CACHE_DIR": cache_dir, "PYTHONWARNINGS": "ignore"}
    code = CHILD.format(bench_root=str(ROOT), root=str(root), n=n, features=features, server=server)
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


STAGES = ("import engine", "first UMAP", "first UMAP cpu")


def show(label: str, timings: dict) -> None:
    parts = ", ".join(f"{k} {timings[k]:.2f} s" for k in STAGES)
    print(f"{label:<16} process {timings['process']:6.2f} s, cpu {timings['cpu']:6.2f} s  ({parts})")


def medians(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0] if key != "shape"}


def baseline_tree(revision: str, folder: str) -> Path:
    """The lab's files at git `revision`, unpacked into `folder` (git archive: reads only)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
    return Path(folder)


def bench_umap(sizes: list[int], features: int, rounds: int, baseline: str | None = None) -> None:
    """First UMAP in fresh processes: cold once, then warm and after the server's warm-up,
    `rounds` times per size (this tree and the baseline interleaved), medians."""
    with tempfile.TemporaryDirectory(prefix="dl-umap-") as scratch:
        trees = {"this tree": ROOT}
        if baseline:
            trees[f"baseline {baseline}"] = baseline_tree(baseline, tempfile.mkdtemp(dir=scratch))
        caches = {name: tempfile.mkdtemp(dir=scratch) for name in trees}
        print(f"UMAP of N x {features}, first use in a new process; cold: an empty numba cache (N = {sizes[0]})")
        for name, root in trees.items():
            show(f"cold {name}", first_umap(caches[name], sizes[0], features, root=root))
        for n in sizes:
            warm, server = {name: [] for name in trees}, {name: [] for name in trees}
            for _ in range(rounds):
                for name, root in trees.items():
                    warm[name].append(first_umap(caches[name], n, features, root=root))
                    server[name].append(first_umap(caches[name], n, features, server=True, root=root))
            print(f"N = {n}, medians of {rounds} fresh processes each (warm cache)")
            for name in trees:
                show(f"warm {name}", medians(warm[name]))
                after = medians(server[name])
                print(f"{'':<16} after the server's warm-up ({after['server warm-up']:.2f} s at its start): "
                      f"first UMAP {after['first UMAP']:.2f} s")
            this = medians(warm["this tree"])
            if baseline:
                base = medians(warm[f"baseline {baseline}"])
                ratios = ", ".join(f"{key} {base[key] / this[key]:.2f}x" for key in ("process", *STAGES))
                print(f"{'':<16} baseline / this tree: {ratios}")
            print(f"{'':<16} this tree: from importing the engine to the first embedding "
                  f"{this['import engine'] + this['first UMAP']:.2f} s, whole process {this['process']:.2f} s")


PCA_SHAPES = [(500, 128), (4000, 256), (2000, 1024), (256, 4000)]  # page, bench, wide layer, few samples
PCA_DIM = 2


def principal_angle_degrees(A: np.ndarray, B: np.ndarray) -> float:
    """The largest principal angle between the column spaces of A and B (same rows), from its
    sine (the norm of B's basis off A's span), which unlike the cosine resolves tiny angles."""
    QA, QB = np.linalg.qr(A)[0], np.linalg.qr(B)[0]
    sine = np.linalg.norm(QB - QA @ (QA.T @ QB), ord=2)
    return float(np.degrees(np.arcsin(min(sine, 1.0))))


def lowrank_pca(X, dim: int, niter: int = 2):
    """torch.pca_lowrank's scores and singular values, centred by it, as its users call it
    (niter=2 is its default)."""
    import torch

    U, S, _ = torch.pca_lowrank(X, q=dim, center=True, niter=niter)
    return (U * S).numpy(), S.numpy()


MATCHED_ANGLE = np.degrees(1e-6)  # the accuracy lowrank is raised to: 1e-6 rad, in degrees
NITERS = (2, 4, 8, 16, 32, 64, 128, 256)


def matched_niter(X, dim: int) -> tuple[int, float]:
    """The fewest power iterations (of NITERS) that bring pca_lowrank's score subspace within
    MATCHED_ANGLE of the exact one, and the angle it then has (the last tried when none does)."""
    for niter in NITERS:
        scores, singular_values = lowrank_pca(X, dim, niter)
        angle, _ = pca_errors(X.numpy(), scores, singular_values, None, dim)
        if angle <= MATCHED_ANGLE:
            break
    return niter, angle


def pca_errors(X: np.ndarray, scores: np.ndarray, singular_values: np.ndarray | None,
               ratios: np.ndarray | None, dim: int) -> tuple[float, float]:
    """(largest principal angle in degrees, largest explained-variance-ratio difference)
    against numpy's float64 SVD of the centred data."""
    Xc = X.astype(np.float64) - X.astype(np.float64).mean(axis=0)
    U, S, _ = np.linalg.svd(Xc, full_matrices=False)
    exact_ratios = S[:dim] ** 2 / (S**2).sum()
    if ratios is None:
        ratios = singular_values.astype(np.float64) ** 2 / (S**2).sum()
    return principal_angle_degrees(scores, U[:, :dim]), float(np.abs(ratios - exact_ratios).max())


def bench_pca(repeats: int) -> None:
    """Ours against pca_lowrank at its defaults and at matched accuracy (its niter raised until
    its subspace is within MATCHED_ANGLE of the exact one), interleaved, medians."""
    import torch

    from engine import geometry

    print(f"PCA ({PCA_DIM} components) of float32 activations vs torch.pca_lowrank (q={PCA_DIM}) at "
          f"its defaults (niter 2) and at matched accuracy (niter raised until within "
          f"{MATCHED_ANGLE:.1e} deg = 1e-6 rad), {repeats} interleaved repeats, medians; "
          f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}")
    print(f"{'N x D':>12} {'ours ms':>9} {'lowrank ms':>11} {'ratio':>6} {'niter':>6} {'matched ms':>11} "
          f"{'ratio':>6}   angle to exact, deg: ours, lowrank default, lowrank matched")
    for n, d in PCA_SHAPES:
        X = torch.from_numpy(activations_like(n, d))
        niter, matched_angle = matched_niter(X, PCA_DIM)
        methods = {"ours": lambda: geometry.pca(X, PCA_DIM), "default": lambda: lowrank_pca(X, PCA_DIM),
                   "matched": lambda: lowrank_pca(X, PCA_DIM, niter)}
        times = {name: [] for name in methods}
        for _ in range(repeats + 1):  # the first round warms up all
            for name, fn in methods.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        ms = {name: statistics.median(t[1:]) * 1e3 for name, t in times.items()}
        scores, ratios = geometry.pca(X, PCA_DIM)
        our_angle, _ = pca_errors(X.numpy(), scores, None, ratios, PCA_DIM)
        their_scores, their_s = lowrank_pca(X, PCA_DIM)
        their_angle, _ = pca_errors(X.numpy(), their_scores, their_s, None, PCA_DIM)
        print(f"{n:>5} x {d:<5} {ms['ours']:9.2f} {ms['default']:11.2f} {ms['default'] / ms['ours']:5.2f}x "
              f"{niter:6d} {ms['matched']:11.2f} {ms['matched'] / ms['ours']:5.2f}x   "
              f"{our_angle:8.1e} {their_angle:8.1e} {matched_angle:8.1e}")
    print(f"    ratio = lowrank time / ours (above 1: ours faster); load {os.getloadavg()[0]:.2f}")


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


PAGE_CHECKPOINTS = 20
PAGE_CHARTS = 5  # the geometry page's charts for a run: embedding, CKA, RSA, curves, film


def page_run(store) -> str:
    """A digits MLP (two hidden layers of 128) trained with PAGE_CHECKPOINTS checkpoints."""
    from engine.experiment import Experiment, train_job
    from engine.models import ModelSpec
    from engine.train import TrainConfig

    class Quiet:
        cancelled = False

        def report(self, *args, **kwargs):
            pass

    every = 20
    config = TrainConfig(steps=every * (PAGE_CHECKPOINTS - 1), eval_every=100, checkpoint_every=every)
    experiment = Experiment("digits", {}, ModelSpec(width=128, depth=2), config)
    return train_job(Quiet(), experiment, store=store, device="cpu")["run_id"]


def page_analyses(run_id: str, layer: str) -> list[tuple[str, object, dict]]:
    """(name, recipe, settings) of what the geometry page computes with its default settings."""
    from engine import recipes

    samples = 500
    return [
        ("embedding (PCA)", recipes.embedding, dict(layer=layer, method="pca", samples=samples)),
        ("CKA between layers", recipes.layer_similarity, dict(samples=samples)),
        ("RSA", recipes.representational_dissimilarity, dict(layer=layer, samples=300)),
        ("curves at every checkpoint", recipes.geometry_over_training, dict(samples=samples)),
        ("film (aligned PCA)", recipes.embedding_over_training,
         dict(layer=layer, method="pca", samples=samples, frames=recipes.ANIMATION_FRAMES["pca"])),
    ]


def read_representations(store, run_id: str, samples: int = 500) -> None:
    """The baseline: every checkpoint loaded and its layers' activations taken once."""
    from engine import geometry, recipes

    run = recipes.run_data(store, run_id, None, "train", samples)
    layers = recipes.representation_layers(run.model)
    for step in store.checkpoint_steps(run_id):
        run.model.load_state_dict(store.load_checkpoint(run_id, step))
        geometry.activations(run.model, run.x, layers)


def bench_page() -> None:
    import torch

    from engine import recipes
    from engine.experiment import load_model
    from engine.store import RunStore
    from viz import geometry as figures

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))  # as the app's job runner does
    with tempfile.TemporaryDirectory(prefix="dl-geometry-") as home:
        os.environ["DYNAMICS_LAB_HOME"] = home
        store = RunStore()
        start = time.perf_counter()
        run_id = page_run(store)
        print(f"Geometry page for a digits MLP (128 x 2) with {len(store.checkpoint_steps(run_id))} checkpoints "
              f"(trained in {time.perf_counter() - start:.1f} s); 500 samples")
        layers = recipes.representation_layers(load_model(store, run_id))
        layer = layers[max(len(layers) - 2, 0)]  # the page's default layer
        baseline = best_time(lambda: read_representations(store, run_id), repeats=3)
        print(f"{'baseline: read every checkpoint':<34} {baseline * 1000:8.1f} ms")
        results = {}
        for name, recipe, settings in page_analyses(run_id, layer):
            elapsed = best_time(lambda: results.__setitem__(name, recipe(None, store, run_id, **settings)), repeats=3)
            print(f"{name:<34} {elapsed * 1000:8.1f} ms  {elapsed / baseline:6.2f} x baseline")
        builders = [
            ("figure: embedding", lambda: figures.embedding_scatter(results["embedding (PCA)"])),
            ("figure: CKA", lambda: figures.similarity_heatmap(results["CKA between layers"])),
            ("figure: RSA", lambda: figures.rdm_panels(results["RSA"])),
            ("figure: curves", lambda: figures.geometry_curves(results["curves at every checkpoint"])),
            ("figure: film", lambda: figures.embedding_animation(results["film (aligned PCA)"])),
        ]
        for name, build in builders:
            elapsed = best_time(build, repeats=3)
            size = len(build().to_json()) / 1e6
            print(f"{name:<34} {elapsed * 1000:8.1f} ms  {size:5.2f} MB of JSON")
        cold, warm = page_in_apptest(store)
        print(f"{'page in AppTest, cold (jobs)':<34} {cold * 1000:8.1f} ms  {cold / baseline:6.2f} x baseline")
        print(f"{'page in AppTest, warm (stored)':<34} {warm * 1000:8.1f} ms  {warm / baseline:6.2f} x baseline")


def page_in_apptest(store, timeout: float = 300.0) -> tuple[float, float]:
    """Seconds from opening the geometry page until its PAGE_CHARTS charts are drawn: for a
    new run with nothing computed (the analyses run as jobs, polled as the page's fragments
    would), then in a new session with every analysis stored.

    A first opening on the run already there pays for the imports and Streamlit's first
    script run; the page then shows the newest run, trained after it.
    """
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import app_pages.lab as lab

    def open_and_wait() -> float:
        start = time.perf_counter()
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
        at.run()
        at.switch_page("app_pages/geometry.py").run()
        while len(at.get("plotly_chart")) < PAGE_CHARTS:
            if at.exception or at.error or time.perf_counter() - start > timeout:
                raise RuntimeError(f"The page did not draw its charts: {at.exception or [e.value for e in at.error]}")
            time.sleep(0.05)
            at.run()
        return time.perf_counter() - start

    st.cache_resource.clear()
    st.cache_data.clear()
    try:
        open_and_wait()
        page_run(store)  # the newest run, which the page opens on
        return open_and_wait(), open_and_wait()
    finally:
        lab.jobs().shutdown(timeout=10.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--umap-sizes", default="500,4000", help="sample counts for the UMAP part, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per UMAP size (medians)")
    parser.add_argument("--baseline", help="a git revision of the lab to compare UMAP's first use with")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved PCA repeats per shape")
    parser.add_argument("--only", choices=["pca", "umap", "cka", "page"], help="run one part")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.only in (None, "pca"):
        bench_pca(args.repeats)
    if args.only in (None, "umap"):
        bench_umap([int(n) for n in args.umap_sizes.split(",")], args.features, args.rounds, args.baseline)
    if args.only in (None, "cka"):
        bench_cka(args.n, args.features)
    if args.only in (None, "page"):
        bench_page()
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
