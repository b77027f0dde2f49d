"""Empirical NTK benchmark: the engine's structured path against the Jacobian contraction of
the torch.func NTK tutorial (vmap(jacrev) + einsum), and against neural-tangents' structured
derivatives (JAX) when a Python with it is given.

MLP 40-256-256-256-10 (ModelSpec(width=256, depth=3), standard parametrization, ReLU) on
N = 500 MNIST-1D training inputs; kernels "trace", "pseudo" and "full" of x with itself.
All methods see the same inputs and weights (exported once to an .npz file).

Each measurement runs in a fresh subprocess: a warm-up call on 16 samples and, for JAX, one
full-size call that compiles (reported as the first call), then --repeats timed calls. The
subprocesses of the methods are interleaved over --rounds rounds (this machine's load drifts),
and the median of all timed calls of a method is reported with its ratio to the structured
path's median (above 1: the structured path is faster). --threads T pins every worker to the
same T CPUs (sched_setaffinity, before torch or JAX start; torch.set_num_threads(T); XLA sizes
its thread pool from the affinity mask), so the methods compare at equal thread counts; the
default is all CPUs. The workers run under the lab's OpenMP policy, OMP_WAIT_POLICY=PASSIVE
(set by importing `engine`; torch's OpenMP threads sleep at the end of each parallel operation
instead of spinning; JAX has no OpenMP) unless the environment sets one; --omp-spin runs them
with OpenMP's default instead: where another process holds one of the 2 cores, torch's 2
threads then wait for that core at every operation (pseudo at N=500 took 0.45 s against
0.013 s passive, and 0.013-0.017 s with 1 thread). Peak memory: after the set-up and the warm-up the resident-set
high-water mark is reset (/proc/self/clear_refs); the peak is its largest growth over the
resident set then, so it counts everything the computation held at once, on the CPU (torch and
XLA allocations alike; tracemalloc sees neither). Kernels are checked against the structured
path's (relative Frobenius error). The load average is printed before and after.

    python bench/ntk.py [--n 500] [--kinds trace pseudo full] [--methods structured neural-tangents]
                        [--rounds 3] [--repeats 3] [--threads T] [--omp-spin]
                        [--nt-python /tmp/nt-venv/bin/python] [--no-nt]
    python bench/ntk.py --conv [--n 200] [--kinds trace]

--conv: the lab's ResNet-20 (engine.models kind "resnet", width 16, depth 3, BatchNorm in eval
mode, about 270k parameters) on N = 200 digits (8 x 8) inputs: the hooked structured path
against the Jacobian contraction (method="contraction") in one process, after a warm-up of each
on 8 samples, in two interleaved rounds: the best time of each, their ratio, peak memory (the
largest resident-set growth during a call, as above) and the kernels' agreement. It prints which route each layer took.

neural-tangents imports only with jax==0.4.23 and numpy<2; it is never a requirement of the lab.
Where --nt-python does not exist the benchmark makes that venv (pip, from the package index)
and leaves neural-tangents out, with a sentence, if it cannot:
    python3 -m venv /tmp/nt-venv && /tmp/nt-venv/bin/pip install "jax[cpu]==0.4.23" \\
        "jaxlib==0.4.23" "numpy<2" "neural-tangents==0.6.5"

The peer is the MLP as neural-tangents' documentation writes it (stax.serial of stax.Dense
with parameterization="standard" and stax.Relu), so its structured-derivative rules apply;
a kernel that disagrees with the structured path's (relative error above 1e-4) is flagged.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np  # the worker for neural-tangents runs in a Python without torch

ROOT = Path(__file__).resolve().parent.parent
WIDTH, DEPTH, N_OUTPUTS = 256, 3, 10
LAYERS = [f"layers.fc{i}" for i in range(1, DEPTH + 1)] + ["layers.out"]
METHODS = ("structured", "tutorial", "neural-tangents")
NT_PACKAGES = ("jax[cpu]==0.4.23", "jaxlib==0.4.23", "numpy<2", "neural-tangents==0.6.5")
AGREEMENT = 1e-4  # the largest relative error of a kernel against the structured path's in float32


def reset_peak_memory() -> float:
    """Reset the resident-set high-water mark and return the resident set now, in MB.

    Linux resets VmHWM when "5" is written to /proc/self/clear_refs; where that fails, the
    peak stays ru_maxrss since start-up and the growth is measured from it (an underestimate
    when start-up peaked higher).
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_mb("VmRSS")
    except OSError:
        return peak_memory()


def peak_memory() -> float:
    """The resident-set high-water mark in MB (VmHWM, else ru_maxrss)."""
    try:
        return _status_mb("VmHWM")
    except (OSError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise ValueError(f"no {field} in /proc/self/status")


# ---------------------------------------------------------------- the shared problem


def export_problem(n: int, path: Path) -> dict:
    """Save n MNIST-1D inputs and the MLP's initial weights to `path`; return sizes."""
    sys.path.insert(0, str(ROOT))
    from engine import data
    from engine.models import ModelSpec, build, count_parameters

    dataset = data.load("mnist1d")
    model = build(ModelSpec(width=WIDTH, depth=DEPTH), dataset.input_shape, N_OUTPUTS)
    arrays = {"x": dataset.x_train[:n].numpy()}
    arrays.update({name: p.detach().numpy() for name, p in model.named_parameters()})
    np.savez(path, **arrays)
    return {"n": n, "parameters": count_parameters(model)}


# ---------------------------------------------------------------- the three methods
# Each returns (compute(x) -> kernel as a numpy array in the engine's layout, description).


def torch_model(arrays: dict):
    import torch

    sys.path.insert(0, str(ROOT))
    from engine.models import ModelSpec, build

    model = build(ModelSpec(width=WIDTH, depth=DEPTH), (1, 40), N_OUTPUTS)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items() if k != "x"})
    return model


def structured(arrays: dict, kind: str):
    import torch

    model = torch_model(arrays)
    from engine.ntk import empirical_ntk

    return lambda x: empirical_ntk(model, torch.from_numpy(x), kind=kind, method="structured").numpy()


def tutorial(arrays: dict, kind: str):
    """The torch.func tutorial's `empirical_ntk_jacobian_contraction`, verbatim in spirit;
    the pseudo kernel is its trace of the one-output function sum(f) / sqrt(O)."""
    import torch
    from torch.func import functional_call, jacrev, vmap

    model = torch_model(arrays)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def fnet_single(params, x):
        out = functional_call(model, params, (x.unsqueeze(0),)).squeeze(0)
        return out.sum(0, keepdim=True) / math.sqrt(N_OUTPUTS) if kind == "pseudo" else out

    def empirical_ntk_jacobian_contraction(x1, x2, compute):
        jac1 = vmap(jacrev(fnet_single), (None, 0))(params, x1)
        jac1 = [j.flatten(2) for j in jac1.values()]
        jac2 = vmap(jacrev(fnet_single), (None, 0))(params, x2)
        jac2 = [j.flatten(2) for j in jac2.values()]
        einsum_expr = {"full": "Naf,Mbf->NMab", "trace": "Naf,Maf->NM", "diagonal": "Naf,Maf->NMa"}[compute]
        result = torch.stack([torch.einsum(einsum_expr, j1, j2) for j1, j2 in zip(jac1, jac2)])
        return result.sum(0)

    def compute(x):
        x = torch.from_numpy(x)
        kernel = empirical_ntk_jacobian_contraction(x, x, "trace" if kind == "pseudo" else kind)
        return _engine_layout(kernel.numpy(), kind)

    return compute


def neural_tangents(arrays: dict, kind: str):
    """neural-tangents' empirical_ntk_fn with STRUCTURED_DERIVATIVES on the same MLP, written
    the way its documentation writes one: stax.serial of stax.Dense and stax.Relu.

    stax.Dense keeps W as (in, out) and computes x W + b, the layout its structured-derivative
    rules recognise (an MLP written as h @ weight.T, torch's layout, defeats them: at N=500 the
    trace took 6.6 s that way against 0.057 s). parameterization="standard" applies W and b as
    they are, so torch's weights go in transposed (and the bias as a (1, out) row) and the
    network is the same function; the relative-error column checks the kernels agree.
    """
    import jax
    import jax.numpy as jnp
    import neural_tangents as nt
    from neural_tangents import stax

    layers = []
    for _ in range(DEPTH):
        layers += [stax.Dense(WIDTH, parameterization="standard"), stax.Relu()]
    layers.append(stax.Dense(N_OUTPUTS, parameterization="standard"))
    _, apply_fn, _ = stax.serial(*layers)
    params = []
    for i, layer in enumerate(LAYERS):
        weight, bias = arrays[f"{layer}.weight"], arrays[f"{layer}.bias"]
        params.append((jnp.asarray(weight.T), jnp.asarray(bias.reshape(1, -1))))
        if i < DEPTH:
            params.append(())  # stax.Relu has no parameters

    def summed(params, x):  # the pseudo kernel: the NTK of sum_a f_a / sqrt(O)
        return apply_fn(params, x).sum(-1, keepdims=True) / math.sqrt(N_OUTPUTS)

    kernel_fn = jax.jit(nt.empirical_ntk_fn(
        summed if kind == "pseudo" else apply_fn, trace_axes=() if kind == "full" else (-1,), vmap_axes=0,
        implementation=nt.NtkImplementation.STRUCTURED_DERIVATIVES,
    ))

    def compute(x):
        kernel = np.asarray(jax.block_until_ready(kernel_fn(jnp.asarray(x), None, params)))
        # neural-tangents averages over trace_axes; the engine's trace kernel sums.
        return _engine_layout(kernel * N_OUTPUTS if kind == "trace" else kernel, kind)

    return compute


def _engine_layout(kernel: np.ndarray, kind: str) -> np.ndarray:
    """(N, M, O, O) full kernels -> the engine's (N*O, M*O), sample-major."""
    if kind != "full":
        return kernel
    n, m, o, _ = kernel.shape
    return kernel.transpose(0, 2, 1, 3).reshape(n * o, m * o)


# ---------------------------------------------------------------- one measurement (subprocess)


def pin_threads(threads: int | None) -> None:
    """Run this process (and the libraries it starts) on the first `threads` CPUs."""
    if threads:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])


def worker(method: str, kind: str, problem: str, out: str, repeats: int, threads: int | None) -> None:
    pin_threads(threads)  # before torch or JAX size their thread pools
    arrays = dict(np.load(problem))
    x = arrays["x"].reshape(len(arrays["x"]), -1).astype(np.float32)
    methods = {"structured": structured, "tutorial": tutorial, "neural-tangents": neural_tangents}
    compute = methods[method](arrays, kind)
    if method != "neural-tangents":
        import torch

        torch.set_num_threads(len(os.sched_getaffinity(0)))
    compute(x[:16])  # warm-up: lazy imports, first-call set-up
    baseline = reset_peak_memory()
    start = time.perf_counter()
    kernel = compute(x)  # for JAX, the full-size call that compiles
    first = time.perf_counter() - start
    seconds = [first] if method != "neural-tangents" else []
    while len(seconds) < repeats:
        start = time.perf_counter()
        kernel = compute(x)
        seconds.append(time.perf_counter() - start)
    peak = peak_memory() - baseline
    np.save(out, kernel)
    print(json.dumps({"seconds": seconds, "first_seconds": first, "peak_mb": peak, "baseline_mb": baseline,
                      "cpus": len(os.sched_getaffinity(0))}))


def measure(python: str, method: str, kind: str, problem: Path, folder: Path, repeats: int,
            threads: int | None, omp_spin: bool = False) -> dict | None:
    out = folder / f"{method}-{kind}.npy"
    command = [python, str(Path(__file__).resolve()), "--worker", method, "--kind", kind,
               "--problem", str(problem), "--out", str(out), "--repeats", str(repeats)]
    if threads:
        command += ["--threads", str(threads)]
    env = dict(os.environ)
    if omp_spin:  # OpenMP's default: spin, then sleep
        env.pop("OMP_WAIT_POLICY", None)
    else:  # the lab's policy (engine/__init__.py), whatever imports the worker does first
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode != 0:
        print(f"  {method} {kind} failed:\n{done.stderr[-2000:]}")
        return None
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["kernel"] = out
    return result


def neural_tangents_python(python: str) -> str | None:
    """A Python with neural-tangents: `python` if it exists, else a venv made there; None
    (after a sentence saying why) when it cannot be made."""
    if Path(python).exists():
        return python
    venv = Path(python).parent.parent
    print(f"Making a venv with neural-tangents at {venv} (jax 0.4.23, numpy<2)...", flush=True)
    steps = ([sys.executable if sys.prefix == sys.base_prefix else "python3", "-m", "venv", str(venv)],
             [python, "-m", "pip", "install", "--quiet", *NT_PACKAGES],
             [python, "-c", "import neural_tangents"])
    for command in steps:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as error:
            print(f"neural-tangents skipped: '{' '.join(command[:3])}' could not run ({error}).")
            return None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            print(f"neural-tangents skipped: '{' '.join(command[:3])}' failed ({last}).")
            return None
    return python


def load() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


# ---------------------------------------------------------------- conv: ResNet-20 on digits


ROUNDS = 2  # of the conv section's interleaved timings


def conv_section(n: int, kinds: list[str]) -> None:
    """The hooked structured path against the Jacobian contraction on the lab's ResNet-20."""
    import torch

    sys.path.insert(0, str(ROOT))
    from engine import data, ntk
    from engine.models import ModelSpec, build, count_parameters

    torch.manual_seed(0)
    dataset = data.load("digits")
    model = build(ModelSpec(kind="resnet", width=16, depth=3, seed=0), dataset.input_shape, dataset.n_classes)
    x = dataset.x_train[:n].float()
    print(f"ResNet-20 (width 16), {count_parameters(model):,} parameters, N = {len(x)} digits 8x8 inputs, "
          f"{dataset.n_classes} outputs, float32, CPU, {torch.get_num_threads()} threads")
    for kind in kinds:
        measured = {}
        for method in ("structured", "contraction"):
            ntk.empirical_ntk(model, x[:8], kind=kind, method=method)  # warm-up
        for _ in range(ROUNDS):  # interleaved, the best of each: the shared machine's load varies
            for method in ("structured", "contraction"):
                baseline = reset_peak_memory()
                start = time.perf_counter()
                kernel = ntk.empirical_ntk(model, x, kind=kind, method=method)
                seconds = time.perf_counter() - start
                best = measured.get(method, (math.inf, 0.0))
                measured[method] = (min(seconds, best[0]), max(peak_memory() - baseline, best[1]), kernel.double())
        (s_time, s_peak, s_kernel), (c_time, c_peak, c_kernel) = measured["structured"], measured["contraction"]
        error = float((s_kernel - c_kernel).norm() / c_kernel.norm())
        print(f"{kind:7} structured  {s_time:8.2f} s {s_peak:8.0f} MB peak")
        print(f"{kind:7} contraction {c_time:8.2f} s {c_peak:8.0f} MB peak")
        print(f"{kind:7} contraction / structured time: {c_time / s_time:.2f}x; relative difference {error:.1e}",
              flush=True)
    print("routes:", _routes(model, x, kinds[0]))


def _routes(model, x, kind: str) -> str:
    """Which route each hooked layer took ("gram" or "derivatives")."""
    from engine import ntk

    with ntk.evaluating(model):
        params, constants = ntk._split_state(model, None)
        source = ntk._feature_source(model, params, constants, x, "structured", kind, ntk._checked_rates(None, params))
        directions = ntk._directions(kind, 10)
        return ", ".join(f"{name} {source._route(name, directions)}" for name in source.shapes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, help="samples (default 500; 200 with --conv)")
    parser.add_argument("--kinds", nargs="+", help="kernels (default trace, pseudo and full; trace with --conv)")
    parser.add_argument("--nt-python", default="/tmp/nt-venv/bin/python",
                        help="a Python with neural-tangents (made as a venv there if it does not exist)")
    parser.add_argument("--no-nt", action="store_true", help="leave neural-tangents out")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="which methods (default all three; the tutorial's Jacobians are large)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of subprocesses")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per subprocess")
    parser.add_argument("--threads", type=int, help="pin every method to this many CPUs (default all)")
    parser.add_argument("--omp-spin", action="store_true",
                        help="OpenMP's default wait policy for the workers (threads spin between operations) "
                             "instead of the lab's PASSIVE")
    parser.add_argument("--conv", action="store_true", help="the ResNet-20 section (structured vs contraction)")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--problem", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.kind, args.problem, args.out, args.repeats, args.threads)
    if args.conv:
        return conv_section(args.n or 200, args.kinds or ["trace"])
    args.n, args.kinds = args.n or 500, args.kinds or ["trace", "pseudo", "full"]

    methods = ["structured"] + [m for m in args.methods if m != "structured"]  # the reference, first
    pythons = {method: sys.executable for method in methods if method != "neural-tangents"}
    nt_python = None if args.no_nt or "neural-tangents" not in methods else neural_tangents_python(args.nt_python)
    if nt_python is not None:
        pythons["neural-tangents"] = nt_python
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sizes = export_problem(args.n, folder / "problem.npz")
        n, p = sizes["n"], sizes["parameters"]
        policy = "OpenMP's default (spin)" if args.omp_spin else os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
        print(f"MLP 40-{WIDTH}x{DEPTH}-{N_OUTPUTS}, {p:,} parameters, N = {n} MNIST-1D inputs, float32, CPU, "
              f"{args.threads or len(os.sched_getaffinity(0))} threads (CPUs) per method, OpenMP wait policy {policy}")
        print(f"one Jacobian J(x): N*O*P*4 bytes = {n * N_OUTPUTS * p * 4 / 1e9:.2f} GB; "
              f"full kernel (N*O)^2*4 bytes = {(n * N_OUTPUTS) ** 2 * 4 / 1e9:.2f} GB")
        print(f"median of {args.rounds} interleaved rounds x {args.repeats} calls; {load()}", flush=True)
        for kind in args.kinds:
            bench_kind(kind, pythons, folder, args)
        print(f"done; {load()}")


def bench_kind(kind: str, pythons: dict, folder: Path, args) -> None:
    """The methods' subprocesses interleaved over the rounds; medians, ratios and agreement."""
    results: dict[str, list] = {method: [] for method in pythons}
    for _ in range(args.rounds):
        for method, python in pythons.items():
            result = measure(python, method, kind, folder / "problem.npz", folder, args.repeats, args.threads,
                             args.omp_spin)
            if result is not None:
                result["kernel"] = np.load(result["kernel"])
                results[method].append(result)
    print(f"{'kind':7} {'method':16} {'median s':>9} {'min s':>8} {'1st call s':>10} {'peak MB':>9} "
          f"{'CPUs':>4} {'rel. err':>9} {'/ structured':>12}")
    if not results["structured"]:
        print(f"{kind:7} the structured path failed: no reference")
        return
    reference = results["structured"][0]["kernel"]
    ours = statistics.median(t for r in results["structured"] for t in r["seconds"])
    for method, runs in results.items():
        if not runs:
            continue
        times = [t for r in runs for t in r["seconds"]]
        median = statistics.median(times)
        error = relative_error(runs[0]["kernel"], reference)
        flag = "" if error <= AGREEMENT else "  DISAGREES with the structured path: not a fair comparison"
        ratio = f"{median / ours:12.2f}"
        print(f"{kind:7} {method:16} {median:9.3f} {min(times):8.3f} {statistics.median(r['first_seconds'] for r in runs):10.3f} "
              f"{max(r['peak_mb'] for r in runs):9.0f} {runs[0]['cpus']:4d} {error:9.1e}{ratio}{flag}", flush=True)
    print(f"        {load()}", flush=True)


if __name__ == "__main__":
    main()
