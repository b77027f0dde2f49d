"""Does the engine compute on this device what it computes on the CPU? (`python -m engine doctor`)

Each check runs one part of the engine (the trainer, or a lens: landscape surface, Hessian top
eigenvalue, the four NTK kinds, CKA and PCA embedding, a level-set traversal, every pruning
score, the kernel twin, the vmap'd ensemble) twice from the same weights and data: once on the
CPU, the reference, and once on the device under test. It reports the largest difference
between the two results, absolute and relative to the largest magnitude of the CPU result,
against a tolerance stated per check with the reason for it, and times both runs.

float32 on a GPU does not round like float32 on a CPU: matrix products and reductions sum in
another order (and in parallel), so the last bits differ, about 1e-7 relative per operation.
A correct computation therefore agrees to about 1e-6 in a single pass; a tolerance above that
says how much a check's own algorithm may grow the rounding (steps that feed into each other,
an eigenvector's direction, a decision at a threshold). A bug (a tensor left on the wrong
device, a kernel that differs) shows as an error or as a difference of order 1.
TF32 matrix products (`torch.backends.cuda.matmul.allow_tf32`) round to about 1e-3 and fail
these tolerances on purpose: the header says when they are on.

With the CPU as the device under test, the second run works on fresh copies of the model and
data in the same process: the comparison then exercises the whole mechanism and must agree
exactly (the CPU's kernels are deterministic).

    report = run("cuda", quick=True)
    print(table(report)); report.passed
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from engine import data as datasets
from engine import geometry, hessian, landscape, levelset, ntk, pruning
from engine.ensemble import EnsembleTrainer
from engine.lazy import KernelTwin
from engine.models import ModelSpec, build
from engine.train import TrainConfig, Trainer

__all__ = ["Size", "Setup", "reference_setup", "moved", "train_run", "landscape_surface", "hessian_top", "ntk_kernel",
           "geometry_cka", "geometry_embedding", "levelset_traversal", "pruning_scores", "kernel_twin",
           "ensemble_run", "Check", "Outcome", "Report", "difference", "synchronize", "timed", "warm_up", "describe",
           "run", "notes", "table", "QUICK", "CHECKS"]

Arrays = dict[str, np.ndarray]


# ---------------------------------------------------------------- what the checks work on


@dataclass(frozen=True)
class Size:
    """How big the checks are: --quick takes seconds on a CPU, the full size shows timings."""

    data: str
    data_options: dict
    width: int
    depth: int
    samples: int  # inputs the lenses average or compute kernels over
    ntk_samples: int
    train_steps: int  # steps of the trainer, twin and ensemble checks
    resolution: int  # landscape grid points per side
    hessian_iters: int
    traversal_steps: int
    twin_samples: int  # training samples the kernel twin follows (its kernel is N*O square)
    hutchinson_samples: int  # HVPs of OBD's estimate of the Hessian's diagonal
    warm_up: bool  # time a second run of each check, not its first (which pays first-use costs)


QUICK = Size("moons", {"n": 200}, width=16, depth=2, samples=160, ntk_samples=32, train_steps=20,
             resolution=5, hessian_iters=10, traversal_steps=20, twin_samples=64,
             hutchinson_samples=8, warm_up=False)
FULL = Size("mnist1d", {}, width=256, depth=2, samples=4000, ntk_samples=512, train_steps=200,
            resolution=21, hessian_iters=50, traversal_steps=200, twin_samples=400,
            hutchinson_samples=pruning.HUTCHINSON_SAMPLES, warm_up=True)


@dataclass
class Setup:
    """One side of the comparison: the same weights and data, on one device."""

    model: nn.Module  # trained a few steps away from its initialisation
    spec: ModelSpec
    data: datasets.Dataset
    config: TrainConfig
    size: Size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def x(self) -> torch.Tensor:
        return self.data.x_train[:self.size.samples]

    @property
    def y(self) -> torch.Tensor:
        return self.data.y_train[:self.size.samples]

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def fresh(self, spec: ModelSpec) -> nn.Module:
        """A model as `build` makes it (untrained), in the setup's dtype, on the CPU: trainers
        move it themselves."""
        return build(spec, self.data.input_shape, self.data.n_outputs).to(self.dtype)


def reference_setup(size: Size) -> Setup:
    """The CPU side: the data, and a model trained a few SGD steps so that the lenses look at
    a point that is not the initialisation (where gradients and Hessians are untypical)."""
    data = datasets.load(size.data, **size.data_options)
    spec = ModelSpec(width=size.width, depth=size.depth, seed=0)
    config = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=64, steps=size.train_steps,
                         eval_every=size.train_steps, checkpoint_every=size.train_steps, seed=0)
    model = build(spec, data.input_shape, data.n_outputs)
    Trainer(model, data, config, device="cpu", keep_checkpoints=False).run()
    return Setup(model.eval(), spec, data, config, size)


def moved(setup: Setup, device: torch.device) -> Setup:
    """Fresh copies of the setup's model and data on `device` (copies even on the CPU)."""
    data = setup.data.to(device)
    if data.x_train is setup.data.x_train:  # `.to` keeps tensors already there: copy them
        data = dataclasses.replace(data, **{k: getattr(data, k).clone()
                                            for k in ("x_train", "y_train", "x_test", "y_test")})
    return dataclasses.replace(setup, model=copy.deepcopy(setup.model).to(device), data=data)


# ---------------------------------------------------------------- the checks


def _numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=float)


def train_run(s: Setup) -> Arrays:
    trainer = Trainer(s.fresh(s.spec), s.data, s.config, device=s.device, keep_checkpoints=False)
    trainer.run()
    return {"loss": _numpy(trainer.history.train_loss),
            "weights": _numpy(landscape.flatten(landscape.parameters(trainer.model)))}


def landscape_surface(s: Setup) -> Arrays:
    d1 = landscape.random_direction(s.model, seed=1)
    d2 = landscape.random_direction(s.model, seed=2)
    xs = np.linspace(-1.0, 1.0, s.size.resolution)
    result = landscape.surface(s.model, "ce", s.x, s.y, d1, d2, xs=xs)
    return {"loss": result.loss, "accuracy": result.accuracy}


def hessian_top(s: Setup) -> Arrays:
    # tol=0: a fixed number of iterations on both devices, so neither stops a step earlier
    values, _ = hessian.top_eigenvalues(s.model, "ce", s.x, s.y, k=1, iters=s.size.hessian_iters, tol=0.0)
    return {"top eigenvalue": values}


def ntk_kernel(kind: str) -> Callable[[Setup], Arrays]:
    def compute(s: Setup) -> Arrays:
        return {kind: _numpy(ntk.empirical_ntk(s.model, s.x[:s.size.ntk_samples], kind=kind))}
    return compute


def _features(s: Setup) -> dict[str, torch.Tensor]:
    """Each layer's activations, back on the model's device (`activations` returns them on the
    CPU), so that the geometry after them runs on the device too."""
    return {k: v.to(s.device) for k, v in geometry.activations(s.model, s.x).items()}


def geometry_cka(s: Setup) -> Arrays:
    features = list(_features(s).values())
    return {"cka": np.array([[geometry.linear_cka(a, b) for b in features] for a in features])}


def geometry_embedding(s: Setup) -> Arrays:
    last_hidden = list(_features(s).values())[-2]
    return {"pca": geometry.embed(last_hidden, "pca", dim=2)}


def levelset_traversal(s: Setup) -> Arrays:
    x, y = s.data.x_test, s.data.y_test
    source = x[0]
    target = x[int(torch.nonzero(y != y[0])[0])]  # the first sample of another class
    path = levelset.traverse(s.model, source, target, steps=s.size.traversal_steps, bounds=s.data.bounds)
    return {"path": path.path, "confidence": path.confidence}


def pruning_scores(s: Setup) -> Arrays:
    options = {"obd": {"samples": s.size.hutchinson_samples}}
    return {f"{method} {name}": _numpy(score)
            for method in pruning.METHODS
            for name, score in pruning.scores(s.model, method, s.x, s.y, **options.get(method, {})).items()}


def _twin_data(s: Setup) -> datasets.Dataset:
    n = s.size.twin_samples
    return dataclasses.replace(s.data, x_train=s.data.x_train[:n], y_train=s.data.y_train[:n])


def kernel_twin(s: Setup) -> Arrays:
    twin = KernelTwin(s.fresh(s.spec).to(s.device), _twin_data(s), s.config, device=s.device)
    for _ in range(s.size.train_steps):
        twin.step()
    return {"outputs": _numpy(twin.outputs()), "loss": _numpy(twin.train_loss)}


def ensemble_run(s: Setup) -> Arrays:
    members = [s.fresh(dataclasses.replace(s.spec, alpha=alpha, seed=seed)) for alpha in (1.0, 10.0) for seed in (0, 1)]
    ensemble = EnsembleTrainer(members, s.data, s.config, device=s.device)
    ensemble.run()
    return {"train loss": _numpy(ensemble.output_losses("train")),
            "test loss": _numpy(ensemble.output_losses("test"))}


@dataclass(frozen=True)
class Check:
    """One part of the engine, how far its two results may differ (relative), and why."""

    name: str
    compute: Callable[[Setup], Arrays]
    tolerance: float
    why: str


SINGLE_PASS = "one pass of float32 products and sums: rounding of about 1e-6, ten times that allowed"
CHECKS = (
    Check("trainer", train_run, 1e-3,
          "each SGD step starts from the last one's rounding; tens of steps grow 1e-7 to about 1e-5"),
    Check("landscape surface", landscape_surface, 1e-4, SINGLE_PASS),
    Check("hessian top eigenvalue", hessian_top, 1e-4,
          "a fixed number of power iterations of double-backward HVPs; the iteration damps rounding"),
    *(Check(f"ntk {kind}", ntk_kernel(kind), 1e-4, SINGLE_PASS + " (sums over every parameter)")
      for kind in ntk.KINDS),
    Check("geometry cka", geometry_cka, 1e-4, "float64 CKA of float32 activations: the activations' rounding"),
    Check("geometry embedding", geometry_embedding, 1e-3,
          "PCA directions move by the activations' rounding divided by the gap between singular values"),
    Check("level-set traversal", levelset_traversal, 1e-3,
          "each step starts from the last; a step accepted on one device and not the other would "
          "show as a difference of order 1"),
    Check("pruning scores", pruning_scores, 1e-3,
          "gradients, Hessian products and SynFlow's products over layers, in float32"),
    Check("lazy kernel twin", kernel_twin, 1e-4,
          "the kernel (one pass) times steps of linear dynamics, which do not grow the rounding"),
    Check("ensemble (phase diagram)", ensemble_run, 1e-3, "SGD steps, as the trainer"),
)


# ---------------------------------------------------------------- comparing and timing


@dataclass
class Outcome:
    """One check's result: the differences, the verdict, the timings (seconds)."""

    name: str
    tolerance: float
    why: str
    max_abs: float = float("nan")
    max_rel: float = float("nan")
    cpu_seconds: float = float("nan")
    device_seconds: float = float("nan")
    error: Optional[str] = None  # a check that raised: the sentence, and it fails

    @property
    def passed(self) -> bool:
        return self.error is None and self.max_rel <= self.tolerance

    @property
    def ratio(self) -> float:
        """How many times faster the device was than the CPU."""
        return self.cpu_seconds / self.device_seconds if self.device_seconds > 0 else float("nan")


@dataclass
class Report:
    device: torch.device
    outcomes: list[Outcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)


def difference(reference: Arrays, other: Arrays) -> tuple[float, float]:
    """The largest |reference - other| over every array, and the largest relative to each
    array's largest magnitude (a normwise relative error: entries near 0 do not blow it up).
    NaNs and infinities (a pruned weight's score is -inf) must be the same at the same places;
    a missing array or another shape is an infinite difference."""
    worst_abs, worst_rel = 0.0, 0.0
    for key, ref in reference.items():
        if ref is None and other.get(key) is None:
            continue
        a, b = np.asarray(ref, dtype=float), np.asarray(other.get(key), dtype=float)
        if a.shape != b.shape:
            return float("inf"), float("inf")
        finite = np.isfinite(a)
        if not (np.array_equal(finite, np.isfinite(b)) and np.array_equal(a[~finite], b[~finite], equal_nan=True)):
            return float("inf"), float("inf")
        a, b = a[finite], b[finite]
        gap = float(np.max(np.abs(a - b), initial=0.0))
        scale = float(np.max(np.abs(a), initial=0.0))
        worst_abs = max(worst_abs, gap)
        worst_rel = max(worst_rel, gap / scale if scale > 0 else gap)
    return worst_abs, worst_rel


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(compute: Callable[[Setup], Arrays], setup: Setup) -> tuple[Arrays, float]:
    """The check's result and its wall time; after an untimed first run when the size says so."""
    if setup.size.warm_up:
        compute(setup)
    synchronize(setup.device)
    start = time.perf_counter()
    result = compute(setup)
    synchronize(setup.device)
    return result, time.perf_counter() - start


def warm_up(setup: Setup) -> None:
    """One forward and backward pass, so that the device's start-up (context, libraries) is not
    counted in the first check's time."""
    loss = setup.model(setup.x).sum()
    torch.autograd.grad(loss, [p for p in setup.model.parameters()])
    synchronize(setup.device)


def describe(error: BaseException) -> str:
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first_line}"


def run(device, quick: bool = False, checks=None, say: Callable[[str], None] = lambda text: None) -> Report:
    """Run every check on the CPU and on `device` (a name or a torch.device) and compare.

    Args:
        device: the device under test; "cpu" compares the CPU with fresh copies of itself.
        quick: the tiny size (seconds on a CPU) instead of the full one.
        checks: which checks (all by default).
        say: called with a line of progress before each check.
    """
    device = torch.device(device)
    checks = CHECKS if checks is None else checks
    size = QUICK if quick else FULL
    say(f"Preparing {size.data} and a {size.depth}x{size.width} MLP…")
    cpu = reference_setup(size)
    tested = moved(cpu, device)
    report = Report(device, notes=notes(device, size))
    warm_up(tested)
    for check in checks:
        say(f"Checking {check.name} on the CPU and on {device}…")
        outcome = Outcome(check.name, check.tolerance, check.why)
        expected, outcome.cpu_seconds = timed(check.compute, moved(cpu, torch.device("cpu")))
        try:
            got, outcome.device_seconds = timed(check.compute, tested)
            outcome.max_abs, outcome.max_rel = difference(expected, got)
        except Exception as error:  # a device bug is a finding to report, not a crash
            outcome.error = describe(error)
        report.outcomes.append(outcome)
    return report


def notes(device: torch.device, size: Size = QUICK) -> list[str]:
    """What the reader of the table should know about the device and the timings."""
    lines = [f"torch {torch.__version__}; float32 matmul precision '{torch.get_float32_matmul_precision()}'",
             "Times are of a second run of each check, after a warm-up run." if size.warm_up else
             "Times are of a single run of each check, first-use costs included (the full size times a warm run)."]
    if device.type == "cpu":
        lines.append("The device under test is the CPU: each check is compared with a fresh copy of itself.")
    if device.type == "cuda":
        lines.append(f"{torch.cuda.get_device_name(device)}")
        if torch.backends.cuda.matmul.allow_tf32:
            lines.append("TF32 matrix products are on: they round to about 1e-3, above these tolerances.")
    return lines


# ---------------------------------------------------------------- the table


def table(report: Report) -> str:
    """The report as a text table, one row per check, then the tolerances' reasons."""
    head = ("check", "max abs diff", "max rel diff", "tolerance", "result", "cpu s", "device s", "ratio")
    rows = [head]
    for o in report.outcomes:
        verdict = "pass" if o.passed else ("ERROR" if o.error else "FAIL")
        rows.append((o.name, f"{o.max_abs:.2e}", f"{o.max_rel:.2e}", f"{o.tolerance:.0e}", verdict,
                     f"{o.cpu_seconds:.3f}", f"{o.device_seconds:.3f}", f"{o.ratio:.2f}x"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [*report.notes, ""]
    lines += ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
              for row in rows]
    lines.append("")
    lines += [f"{o.name}: {o.error}" for o in report.outcomes if o.error]
    lines += ["Tolerances (relative to the largest magnitude of the CPU result), and why:"]
    lines += [f"  {o.name}: {o.tolerance:.0e}, {o.why}" for o in report.outcomes]
    failed = [o.name for o in report.outcomes if not o.passed]
    lines.append("All checks pass." if not failed else f"{len(failed)} check(s) failed: {', '.join(failed)}.")
    return "\n".join(lines)
