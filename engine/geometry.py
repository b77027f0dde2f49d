"""Representation geometry: what the layers of a network compute, and how that changes.

- Activations: `layer_names` (the usual layers), `module_names` (every module), `activations`
  (forward hooks on any module of any model, in batches), `activations_over_checkpoints`.
- Pictures: `embed` (PCA or UMAP) and `aligned_embed` (successive frames made comparable).
- Similarity between representations: `linear_cka`, `rbf_cka`, `minibatch_cka`
  (Kornblith et al. 2019; Nguyen et al. 2021), RSA with `rdm` and `compare_rdms`,
  `input_target_alignment` (Alleman et al. 2024).
- Structure of one representation: `neural_collapse` (Papyan et al. 2020), `effective_rank`,
  `participation_ratio`; `match_units` lines up the units of two representations.
- Outputs: `classification_margin` (true-class logit minus the largest other).

Array arguments may be torch tensors (on any device) or numpy arrays; more than two
dimensions are flattened to (N, features). Statistics are computed in float64.

UMAP (umap-learn) is imported only when first used, through `import_umap`, which keeps the
numba machine code umap compiles in an on-disk cache (see `numba_cache_dir`): the first use
on a machine compiles for a minute or more, a new process afterwards starts in seconds.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import subprocess
import sys
import threading
import types
import warnings
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from engine.device import to_float64
from engine.models import Square
from engine.modes import evaluating

__all__ = ["ITERATIVE_FROM", "ITERATIVE_TOLERANCE", "as_float64", "layer_names", "module_names", "activations",
           "activations_over_checkpoints", "pca", "procrustes_rotation", "numba_cache_dir", "import_umap",
           "umap_epochs", "nearest_neighbors", "embed", "aligned_embed",
           "linear_cka", "rbf_gram", "centre_gram", "rbf_cka", "MinibatchCKA", "minibatch_cka",
           "input_target_alignment", "target_matrix", "rdm", "compare_rdms", "classification_margin",
           "neural_collapse", "effective_rank", "participation_ratio", "unit_correlations", "match_units",
           "ACTIVATION_TYPES", "WARM_UP_VAR", "warm_up_umap", "warm_up_umap_in_background"]

Array = torch.Tensor | np.ndarray

# Modules whose outputs are worth looking at: the linear maps and the non-linearities.
MAP_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
ACTIVATION_TYPES = (
    nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, Square,
)
EXACT_PCA_LIMIT = 2048  # above this many samples and features, PCA is randomized (pca_lowrank)
# UMAP's layout epochs. umap picks 500 below 10,000 samples and 200 above; 200 gives a settled
# picture in 40% of the time. An epoch's work grows with the samples, so above
# UMAP_EPOCH_SAMPLES the epochs shrink in proportion, to UMAP_MIN_EPOCHS at twice as many: a
# first picture of 4,000 samples in a new process then takes about 4 s instead of 5. The cost
# in trustworthiness (15 neighbours, 4,000 samples, two seeds) is 0.9705 at 100 epochs against
# 0.9715 at 200 and 0.9725 at umap's 500.
UMAP_EPOCHS = 200
UMAP_MIN_EPOCHS = 100
UMAP_EPOCH_SAMPLES = 2000
# Below this many samples umap finds exact neighbours, but by calling a numba distance from
# Python for every pair (8 million calls, about a minute, for 4000 samples); `embed` gives it
# the same neighbours from `nearest_neighbors` instead. At and above it umap uses
# nearest-neighbour descent (pynndescent), which is fast. The limit is umap's own.
EXACT_KNN_LIMIT = 4096
CDIST_DIRECT = 25  # torch.cdist takes differences, not a matrix product, up to this many rows and columns

# ---------------------------------------------------------------- arrays


def as_float64(X: Array) -> torch.Tensor:
    """X as a float64 torch tensor of shape (N, features), on X's device, or on the CPU when
    that device has no float64 (Apple's MPS; see `engine.device.to_float64`)."""
    X = to_float64(X.detach() if isinstance(X, torch.Tensor) else torch.from_numpy(np.asarray(X)))
    return X.reshape(len(X), -1) if X.ndim != 2 else X


def _centred(X: Array) -> torch.Tensor:
    """X in float64 with each column's mean subtracted."""
    X = as_float64(X)
    return X - X.mean(dim=0, keepdim=True)


def _same_samples(X: torch.Tensor, Y: torch.Tensor) -> None:
    if len(X) != len(Y):
        raise ValueError(f"Both representations need the same samples; got {len(X)} and {len(Y)} rows.")


# ---------------------------------------------------------------- activations


def layer_names(model: nn.Module) -> list[str]:
    """The modules worth looking at, in the order they were registered (forward order for
    sequential models): linear and convolutional layers and activation functions.

    For the app's MLP these are `layers.fc1, layers.act1, ..., layers.out`. Any other module
    (a BatchNorm, a residual block, a whole stage) can be looked at too: see `module_names`.
    """
    return [name for name, module in model.named_modules()
            if name and isinstance(module, MAP_TYPES + ACTIVATION_TYPES)]


def module_names(model: nn.Module) -> dict[str, str]:
    """Every submodule a user can look at, {name as in `named_modules()`: its class's name},
    in registration order: layers, normalizations, residual blocks and the containers that
    group them (the model itself, whose output is the output, is left out)."""
    return {name: type(module).__name__ for name, module in model.named_modules() if name}


def _as_rows(output, name: str, n: int) -> torch.Tensor:
    """A module's output for n samples as (n, features): the tensor flattened after the sample
    dimension; of a tuple or list (an LSTM's, an attention's), its first tensor."""
    if isinstance(output, (tuple, list)):
        output = next((t for t in output if isinstance(t, torch.Tensor)), None)
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"Module {name} returns no tensor, so it has no activations to look at.")
    if output.dim() == 0 or len(output) != n:
        raise ValueError(f"Module {name} returns a tensor of shape {tuple(output.shape)} for {n} samples; "
                         "activations need one row per sample (the samples first).")
    return output.detach().flatten(1).float().cpu()


@torch.no_grad()
def activations(model: nn.Module, x: Array, layers: Iterable[str] | None = None,
                batch_size: int = 1024) -> dict[str, torch.Tensor]:
    """The outputs of the named modules for inputs `x`, via forward hooks.

    Works on any module of any model (a Conv2d, a BatchNorm, a residual block, a stage of a
    ResNet), whatever the model's own layout: the hooks catch each module's output where the
    forward pass produces it. The model runs in eval mode (restored afterwards; BatchNorm
    uses its running statistics) and without gradients, in batches of `batch_size` on the
    model's device; the hooks are removed even if the forward fails. A module that runs more
    than once in one forward pass (shared weights, a ReLU reused inside a block, or the frozen
    initial copy that `Centered` runs before the live model) gives its last output.

    Args:
        model: any module.
        x: the inputs, (N, ...) as the model takes them, e.g. (N, C, H, W) for a conv net.
        layers: module names as in `model.named_modules()`; by default `layer_names(model)`.
        batch_size: samples per forward pass.

    Returns:
        {layer: (N, features) float32 tensor on the CPU}, each output flattened after the
        sample dimension (a conv layer's (N, C, H, W) becomes (N, C*H*W)), in the order of
        `layers`.
    """
    layers = list(layer_names(model) if layers is None else layers)
    modules = dict(model.named_modules())
    unknown = [name for name in layers if name not in modules or not name]
    if unknown:
        known = list(module_names(model))
        shown = ", ".join(known[:12]) + (f" and {len(known) - 12} more" if len(known) > 12 else "")
        raise ValueError(f"The model has no module named {', '.join(map(repr, unknown))}; "
                         f"it has {shown or 'no submodules to look at'}.")
    x = torch.as_tensor(x)
    parameter = next(model.parameters(), None)
    if parameter is not None:  # inputs go where the weights are, floats in their precision
        x = x.to(parameter.device, parameter.dtype if x.is_floating_point() else x.dtype)

    latest: dict[str, object] = {}

    def keep_output(name):
        def hook(module, inputs, output):
            latest[name] = output
        return hook

    hooks = [modules[name].register_forward_hook(keep_output(name)) for name in layers]
    try:
        with evaluating(model):
            collected = {name: [] for name in layers}
            for start in range(0, len(x), batch_size):
                batch = x[start:start + batch_size]
                latest.clear()
                model(batch)
                for name in layers:
                    if name not in latest:
                        raise ValueError(f"Module {name} did not run in the model's forward pass.")
                    collected[name].append(_as_rows(latest[name], name, len(batch)))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: torch.cat(parts) for name, parts in collected.items()}


def activations_over_checkpoints(model: nn.Module | Callable[[], nn.Module],
                                 checkpoints: Mapping[int, Mapping[str, torch.Tensor]],
                                 x: Array, layers: Iterable[str] | None = None,
                                 batch_size: int = 1024) -> dict[int, dict[str, torch.Tensor]]:
    """`activations` at every checkpoint of a run, e.g. `Trainer.checkpoints`.

    Args:
        model: a module of the run's architecture (a copy is loaded, so the one given is left
            as it is), or a function without arguments that builds one.
        checkpoints: {step: state_dict}.
        x, layers, batch_size: as for `activations`.

    Returns:
        {step: {layer: (N, features) tensor}}, steps ascending.
    """
    model = copy.deepcopy(model) if isinstance(model, nn.Module) else model()
    out = {}
    for step in sorted(checkpoints):
        model.load_state_dict(checkpoints[step])
        out[step] = activations(model, x, layers, batch_size)
    return out


# ---------------------------------------------------------------- PCA


def pca(X: Array, dim: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Principal component scores and the fraction of variance each component explains.

    Exact unless both the samples and the features number more than EXACT_PCA_LIMIT; then
    randomized (`torch.pca_lowrank`, seeded). The exact route takes the cheaper of two
    symmetric eigenproblems in float64 (`_top_eigenvectors`) rather than an SVD of the data:
    for N samples and D features, the D x D scatter matrix when D <= N, costing O(N D^2 + D^3),
    and the N x N Gram matrix otherwise. Squaring costs accuracy only in components whose
    variance is below about 1e-16 of the largest (relative error eps * (S_1 / S_i)^2), far
    from any picture or explained-variance ratio. Signs follow scikit-learn: each component's largest
    loading is positive.

    Args:
        X: (N, features).
        dim: how many components.
        seed: seed of the randomized method.

    Returns:
        scores (N, dim) float64 and explained variance ratios (dim,).
    """
    Xc = _centred(X)
    n, d = Xc.shape
    dim = min(dim, n, d)
    if min(n, d) > EXACT_PCA_LIMIT:
        U, S, V = _randomized_svd(Xc, dim, seed)
        scores, variances, loadings = U * S, S**2, V
        total_variance = (Xc**2).sum()
    elif d <= n:
        # Xc^T Xc = V diag(S^2) V^T: the loadings directly, the scores by one product.
        variances, loadings, total_variance = _top_eigenvectors(Xc.mT @ Xc, dim)
        scores = Xc @ loadings
    else:
        # Xc Xc^T = U diag(S^2) U^T: the scores U S directly; Xc^T U = V S points along the
        # loadings, which is all the signs need.
        variances, U, total_variance = _top_eigenvectors(Xc @ Xc.mT, dim)
        scores = U * variances.sqrt()
        loadings = Xc.mT @ U
    largest = loadings.abs().argmax(dim=0)
    signs = torch.sign(loadings[largest, torch.arange(dim, device=loadings.device)])
    signs[signs == 0] = 1
    return (scores * signs).cpu().numpy(), (variances / total_variance).cpu().numpy()


# From this size of the scatter or Gram matrix on, its top eigenpairs come from LOBPCG (a block
# of k + 4 vectors) rather than a dense eigh, which computes all of them: at 1024 x 1024 in
# float64, 24 ms against 99 ms, with the top-2 subspace 6e-13 rad from eigh's (bench/geometry.py
# shapes). Its answer is kept only when every pair's residual ||C v - lambda v|| is below
# ITERATIVE_TOLERANCE * lambda_1 (the eigenvalues then agree to about that, and the subspace to
# that over the gap to the next eigenvalue); otherwise the dense eigh answers.
ITERATIVE_FROM = 256
ITERATIVE_TOLERANCE = 1e-11


def _top_eigenvectors(C: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k largest eigenvalues of the symmetric positive semi-definite C (clamped at 0:
    rounding can make a zero one slightly negative), their eigenvectors as columns, largest
    first, and C's trace (the sum of all eigenvalues: the total variance)."""
    if len(C) >= max(ITERATIVE_FROM, 3 * (k + 4)):
        found = _iterative_top_eigenvectors(C, k)
        if found is not None:
            return found[0].clamp_min(0), found[1], C.diagonal().sum()
    eigenvalues, eigenvectors = torch.linalg.eigh(C)
    return eigenvalues[-k:].flip(0).clamp_min(0), eigenvectors[:, -k:].flip(1), C.diagonal().sum()


def _iterative_top_eigenvectors(C: torch.Tensor, k: int):
    """(eigenvalues, eigenvectors) of C's k largest by LOBPCG (seeded, leaving torch's global
    seed alone), largest first; None unless every residual is within ITERATIVE_TOLERANCE."""
    try:
        with torch.random.fork_rng(devices=[C.device] if C.device.type == "cuda" else []):
            torch.manual_seed(0)
            values, vectors = torch.lobpcg(C, k=k + 4, largest=True, tol=ITERATIVE_TOLERANCE / 10,
                                           niter=200)
    except (RuntimeError, ValueError):  # a block it cannot orthogonalise (C of low rank)
        return None
    order = values.argsort(descending=True)[:k]
    values, vectors = values[order], vectors[:, order]
    residuals = torch.linalg.vector_norm(C @ vectors - vectors * values, dim=0)
    scale = float(values[0].abs())
    if not bool(torch.isfinite(residuals).all()) or float(residuals.max()) > ITERATIVE_TOLERANCE * scale:
        return None
    return values, vectors


def _randomized_svd(Xc: torch.Tensor, dim: int, seed: int):
    """`torch.pca_lowrank` of centred data with its own seed, leaving torch's global one alone."""
    with torch.random.fork_rng(devices=[Xc.device] if Xc.device.type == "cuda" else []):
        torch.manual_seed(seed)
        U, S, V = torch.pca_lowrank(Xc, q=dim + 10, center=False, niter=4)
    return U[:, :dim], S[:dim], V[:, :dim]


def procrustes_rotation(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The orthogonal matrix R minimizing ||source @ R - target||_F (Schönemann 1966).

    Both are (N, d) point sets of the same samples; R is (d, d) (a rotation, possibly with
    a reflection). Scale is left alone, so a representation that spreads out still does.
    """
    U, _, Vt = np.linalg.svd(source.T @ target)
    return U @ Vt


# ---------------------------------------------------------------- UMAP and its numba cache

# Packages whose jitted functions get a disk cache: umap, its nearest-neighbour library and
# numba's typed containers (AlignedUMAP passes typed lists; their helpers are jitted too).
DISK_CACHED_PACKAGES = ("umap", "pynndescent", "numba.typed")
_umap_lock = threading.Lock()
_CACHED_JITS: dict = {}


def numba_cache_dir() -> Path:
    """Where numba keeps compiled code: $NUMBA_CACHE_DIR when set, otherwise
    $DYNAMICS_LAB_HOME/numba-cache, otherwise ~/.dynamics-lab/numba-cache."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"]).expanduser()
    home = os.environ.get("DYNAMICS_LAB_HOME") or Path.home() / ".dynamics-lab"
    return Path(home).expanduser() / "numba-cache"


def import_umap():
    """Import umap-learn with its numba functions cached on disk; returns the module.

    Why: umap's jitted functions are not marked `cache=True`, so every new process compiles
    them again (20-60 s on two cores). This

    1. points numba at `numba_cache_dir()` (through NUMBA_CACHE_DIR, before umap loads),
    2. turns on disk caching for every jitted function that the DISK_CACHED_PACKAGES define
       at import (`_enable_disk_cache`), and
    3. replaces `numba` inside `umap.layouts` by `_numba_with_disk_cache()`, because that module
       jits its optimization epochs anew on every call (AlignedUMAP, custom metrics).

    Functions that numba would compile at import (given a type signature, e.g.
    `umap.utils.tau_rand_int` and most of pynndescent) compile on first use instead, and are
    disk-cached too (`_eager_jits_disk_cached`). Safe to call from several threads; the work
    happens once.
    """
    with _umap_lock:
        if "umap" in sys.modules and getattr(sys.modules["umap"], "_dynamics_lab_cached", False):
            return sys.modules["umap"]
        cache_dir = numba_cache_dir()
        cache_dir.mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(cache_dir)
        import numba.core.config
        numba.core.config.reload_config()  # numba may have been imported before the variable was set
        import numba.typed.typeddict
        import numba.typed.typedlist
        with _eager_jits_disk_cached():
            import umap
            import umap.layouts
        from numba.core.dispatcher import Dispatcher

        for name, module in list(sys.modules.items()):
            if _in_cached_package(name):
                for value in list(vars(module).values()):
                    if isinstance(value, Dispatcher):
                        _enable_disk_cache(value)
        umap.layouts.numba = _numba_with_disk_cache()
        umap._dynamics_lab_cached = True
        return umap


@contextlib.contextmanager
def _eager_jits_disk_cached():
    """While importing: jitted functions of the DISK_CACHED_PACKAGES that carry a type
    signature compile on first use, from the disk cache when they can.

    numba compiles such functions inside the decorator, so importing umap compiled (or
    loaded) about fifty of them, most of them pynndescent's, which `embed` below
    EXACT_KNN_LIMIT never calls. This wraps numba's decorator factory: such a function becomes
    a `DeferredDispatcher` that compiles exactly its signatures when numba first needs it and
    then closes itself to other types, as numba's eager decorator does; those without
    `cache=True` (e.g. `umap.utils.tau_rand_int`) get a disk cache (`_enable_disk_cache`).
    """
    import inspect

    from numba.core import config, decorators

    from engine.deferred_jit import DeferredDispatcher

    numba_jit = getattr(decorators, "_jit", None)
    if numba_jit is None:  # a numba whose internals moved: import as numba would, compiling eagerly
        yield
        return

    def jit(sigs, locals, target, cache, targetoptions, **dispatcher_args):
        eager = numba_jit(sigs, locals, target, cache, targetoptions, **dispatcher_args)
        if sigs is None or target != "cpu" or config.DISABLE_JIT:
            return eager

        def wrapper(function):
            if not (inspect.isfunction(function) and _in_cached_package(getattr(function, "__module__", "") or "")):
                return eager(function)
            dispatcher = DeferredDispatcher(py_func=function, locals=locals, targetoptions=targetoptions,
                                            **dispatcher_args)
            if cache:
                dispatcher.enable_caching()
            else:
                _enable_disk_cache(dispatcher)
            return dispatcher.defer(sigs)

        return wrapper

    decorators._jit = jit
    try:
        yield
    finally:
        decorators._jit = numba_jit


def _in_cached_package(module_name: str) -> bool:
    return any(module_name == package or module_name.startswith(package + ".")
               for package in DISK_CACHED_PACKAGES)


# Set to "1" by the `dynamics-lab` launcher: the server warms UMAP up when it starts.
WARM_UP_VAR = "DYNAMICS_LAB_WARM_UP_UMAP"
_warm_up_started = threading.Event()


def warm_up_umap() -> None:
    """Import umap and fit 64 points once, so that its compiled code is on disk
    (`numba_cache_dir`) and loaded in this process: a later first UMAP pays only its fit."""
    points = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    embed(points, "umap", seed=0, n_epochs=2)


def warm_up_umap_in_background() -> threading.Thread | None:
    """Start `warm_up_umap` off the caller's path, once per process, if $DYNAMICS_LAB_WARM_UP_UMAP
    is "1" (the app's server; not tests, which would pay a minute of compiling each).

    A child process fills the disk cache first (on a machine's first run that compiles for
    a minute; in a child it does not hold this server's interpreter lock), then this process
    loads from it, which takes seconds. Returns the thread, or None when it does nothing.
    """
    if os.environ.get(WARM_UP_VAR) != "1" or _warm_up_started.is_set():
        return None
    _warm_up_started.set()

    def warm_up() -> None:
        root = str(Path(__file__).resolve().parent.parent)
        code = (f"import os, sys; sys.path.insert(0, {root!r}); hasattr(os, 'nice') and os.nice(10); "
                "from engine.geometry import warm_up_umap; warm_up_umap()")  # niced: pages first
        subprocess.run([sys.executable, "-c", code], env=os.environ | {"NUMBA_CACHE_DIR": str(numba_cache_dir())},
                       capture_output=True, check=False)
        warm_up_umap()

    thread = threading.Thread(target=warm_up, name="umap warm-up", daemon=True)
    thread.start()
    return thread


def _option_aware_cache(py_func, options: dict):
    """A numba FunctionCache whose index key also holds the compile options.

    Why: numba keys cached code by the Python function and the argument types only, and umap
    jits one function twice, serially and with parallel=True. Sharing a key, one would load
    the other's machine code: parallel (non-deterministic) code for a seeded fit, or serial
    code where parallel was asked for. With the options in the key both live side by side.
    """
    from numba.core.caching import FunctionCache

    class OptionAwareCache(FunctionCache):
        def _index_key(self, sig, codegen):
            return super()._index_key(sig, codegen) + (_stable_repr(options),)

    return OptionAwareCache(py_func)


def _stable_repr(options: dict) -> str:
    """The same string for the same options in every process (sets are sorted first)."""
    def plain(value):
        return sorted(map(str, value)) if isinstance(value, (set, frozenset)) else value
    return repr(sorted((key, plain(value)) for key, value in options.items()))


def _enable_disk_cache(dispatcher) -> None:
    """Let a numba dispatcher that is not yet caching save and load its code on disk.

    Like numba's own `Dispatcher.enable_caching`, but with the compile options in the key.
    Functions whose source numba cannot locate are left uncached.
    """
    from numba.core.caching import NullCache

    if not isinstance(dispatcher._cache, NullCache):
        return  # cache=True already (most of pynndescent)
    try:
        dispatcher._cache = _option_aware_cache(dispatcher.py_func, dispatcher.targetoptions)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        pass


def _numba_with_disk_cache():
    """A stand-in for the `numba` module inside umap.layouts: numba's own namespace (so that
    jitted code there still resolves `numba.prange`), but `njit(function, **options)` returns
    one disk-cached dispatcher per function and options for the whole process, so
    AlignedUMAP compiles neither on every fit nor in every new process.
    """
    import numba

    def njit(*args, **options):
        if not (args and callable(args[0])):
            return numba.njit(*args, **options)  # decorator form: not used at call time
        key = (args[0], _stable_repr(options))
        if key not in _CACHED_JITS:
            _CACHED_JITS[key] = numba.njit(args[0], **options)
            _enable_disk_cache(_CACHED_JITS[key])
        return _CACHED_JITS[key]

    stand_in = types.ModuleType(numba.__name__, numba.__doc__)
    stand_in.__dict__.update(vars(numba))
    stand_in.njit = njit
    return stand_in


def umap_epochs(n_samples: int) -> int:
    """Layout epochs for `n_samples`: UMAP_EPOCHS up to UMAP_EPOCH_SAMPLES, then fewer in
    proportion, never below UMAP_MIN_EPOCHS."""
    return max(UMAP_MIN_EPOCHS, min(UMAP_EPOCHS, UMAP_EPOCHS * UMAP_EPOCH_SAMPLES // max(n_samples, 1)))


def _umap_options(n_samples: int, dim: int, seed: int, options: dict) -> dict:
    """UMAP settings: seeded (hence single-threaded and reproducible), neighbours fewer than
    the samples, `umap_epochs` epochs, and whatever the caller gives on top."""
    settings = {"n_components": dim, "random_state": seed, "n_jobs": 1, "n_epochs": umap_epochs(n_samples),
                "n_neighbors": max(2, min(15, n_samples - 1))}
    settings.update(options)
    return settings


def nearest_neighbors(X: Array, k: int, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by Euclidean distance, each sample first among its own.

    Computed in float64 in blocks of `batch_size` rows, on X's device, so memory stays at
    batch_size x N distances.

    Args:
        X: (N, features).
        k: neighbours per sample, the sample itself included (at most N).

    Returns:
        indices (N, k) int32 and distances (N, k) float32, nearest first, as umap takes them.
    """
    X = as_float64(X)
    k = min(k, len(X))
    samples = _with_squared_norms(X, first=False)
    indices, distances = [], []
    for start in range(0, len(X), batch_size):
        block = _euclidean_distances(X[start:start + batch_size], X, samples)
        rows = torch.arange(len(block), device=X.device)
        block[rows, rows + start] = -1.0  # the sample itself comes first (cdist may give it 1e-8)
        nearest, index = block.topk(k, dim=1, largest=False)
        indices.append(index)
        distances.append(nearest.clamp_min(0.0))
    return (torch.cat(indices).to(torch.int32).cpu().numpy(),
            torch.cat(distances).to(torch.float32).cpu().numpy())


def _with_squared_norms(X: torch.Tensor, first: bool) -> torch.Tensor:
    """(N, features + 2): X and columns of ones and squared norms, the two sides of
    `_euclidean_distances`' product (for the rows, `first`: -2 X, norms, ones)."""
    norms = X.pow(2).sum(dim=-1, keepdim=True)
    if first:
        return torch.cat([X.mul(-2), norms, torch.ones_like(norms)], dim=-1)
    return torch.cat([X, torch.ones_like(norms), norms], dim=-1)


def _euclidean_distances(rows: torch.Tensor, X: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """torch.cdist(rows, X), given `samples` = _with_squared_norms(X, first=False).

    |x - y|^2 = -2 x.y + |x|^2 + |y|^2 as one matrix product, clamped and rooted: cdist's own
    formula (ATen's _euclidean_dist), hence its distances bit for bit, but the samples' side is
    built once instead of once per block (cdist: 1.3-1.5x the time for 4000 x 256 in blocks).
    Up to CDIST_DIRECT rows and samples cdist subtracts coordinates instead, and so does this.
    """
    if len(rows) <= CDIST_DIRECT and len(X) <= CDIST_DIRECT:
        return torch.cdist(rows, X)
    return (_with_squared_norms(rows, first=True) @ samples.mT).clamp_min_(0.0).sqrt_()


def _as_numpy32(X: Array) -> np.ndarray:
    """X as a C-contiguous float32 numpy array (N, features), the type umap computes in."""
    X = as_float64(X).cpu().numpy()
    return np.ascontiguousarray(X, dtype=np.float32)


# ---------------------------------------------------------------- embeddings


def embed(X: Array, method: str = "pca", dim: int = 2, seed: int = 0, **options) -> np.ndarray:
    """Points in `dim` dimensions that picture the representation X.

    Args:
        X: (N, features).
        method: "pca" (exact, instant) or "umap" (neighbourhoods, seconds; see `import_umap`).
        dim: 2 or 3 for pictures; any number for PCA.
        seed: makes UMAP deterministic (random_state) and seeds randomized PCA.
        **options: passed to `umap.UMAP` (n_neighbors, min_dist, metric, n_epochs, ...).

    Returns:
        (N, dim) float64 array.
    """
    if method == "pca":
        return pca(X, dim, seed)[0]
    if method == "umap":
        return _umap(X, dim, seed, options)
    raise ValueError(f"Embedding method must be 'pca' or 'umap', not '{method}'.")


def _umap(X: Array, dim: int, seed: int, options: dict) -> np.ndarray:
    """UMAP of one representation, with exact neighbours from torch below EXACT_KNN_LIMIT."""
    umap = import_umap()
    data = _as_numpy32(X)
    settings = _umap_options(len(data), dim, seed, options)
    if settings.get("metric", "euclidean") == "euclidean" and len(data) < EXACT_KNN_LIMIT:
        settings["precomputed_knn"] = nearest_neighbors(data, settings["n_neighbors"])
    with warnings.catch_warnings():
        # Without a search index umap cannot `transform` new data; embed never does.
        warnings.filterwarnings("ignore", message="precomputed_knn", category=UserWarning)
        return umap.UMAP(**settings).fit_transform(data).astype(np.float64)


def aligned_embed(frames: list[Array], method: str = "umap", dim: int = 2, seed: int = 0,
                  **options) -> list[np.ndarray]:
    """Embeddings of the same samples at successive moments (checkpoints), made comparable.

    - "umap": `umap.AlignedUMAP`, each frame related to the next sample by sample, so a point
      moves only as far as its neighbourhood changes; deterministic for a given seed.
    - "pca": each frame's own PCA, then rotated (orthogonal Procrustes) onto the frame before,
      so that sign flips and swaps of near-equal components do not make the picture jump.

    Args:
        frames: T arrays (N, features_t) of the same N samples; features may differ.
        method, dim, seed, **options: as for `embed` (options go to AlignedUMAP for "umap").

    Returns:
        T arrays (N, dim), float64.
    """
    if len({len(frame) for frame in frames}) > 1:
        raise ValueError("Every frame must hold the same samples (the same number of rows).")
    if method == "pca":
        return _aligned_pca(frames, dim, seed)
    if method == "umap":
        if len(frames) == 1:
            return [_umap(frames[0], dim, seed, options)]
        return _aligned_umap(frames, dim, seed, options)
    raise ValueError(f"Embedding method must be 'pca' or 'umap', not '{method}'.")


def _aligned_pca(frames: list[Array], dim: int, seed: int) -> list[np.ndarray]:
    out = [pca(frame, dim, seed)[0] for frame in frames]
    for t in range(1, len(out)):
        out[t] = out[t] @ procrustes_rotation(out[t], out[t - 1])
    return out


def _aligned_umap(frames: list[Array], dim: int, seed: int, options: dict) -> list[np.ndarray]:
    umap = import_umap()
    data = [_as_numpy32(frame) for frame in frames]
    n = len(data[0])
    identity = {i: i for i in range(n)}
    settings = _umap_options(n, dim, seed, options)
    settings.pop("n_jobs")  # AlignedUMAP does not take it
    # It takes no precomputed neighbours: nearest-neighbour descent instead of umap's slow
    # exact search for small data (see EXACT_KNN_LIMIT).
    settings.setdefault("force_approximation_algorithm", True)
    reducer = umap.AlignedUMAP(**settings)
    with warnings.catch_warnings():
        # Its per-frame UMAPs leave n_jobs at -1 and say so; seeded, they run on one thread.
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        reducer.fit(data, relations=[identity] * (len(data) - 1))
    return [np.asarray(e, dtype=np.float64) for e in reducer.embeddings_]


# ---------------------------------------------------------------- CKA


def _inner_of_grams(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """<A A^T, B B^T>_F = ||A^T B||_F^2, in whichever space is cheaper.

    Feature space costs N * a * b, sample space N^2 * (a + b): wide layers and few samples
    go through the (N, N) Gram matrices, the usual case through the (a, b) cross-product.
    """
    n, a, b = A.shape[0], A.shape[1], B.shape[1]
    if a * b <= n * (a + b):
        return (A.mT @ B).square().sum()
    return ((A @ A.mT) * (B @ B.mT)).sum()


def _debiased_inner(inner: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """n(n-3) times the unbiased HSIC estimator of Song et al. (2012), from centred features.

    With K = A A^T and L = B B^T, the estimator is
    [tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3)), K~ being K with
    its diagonal set to zero. For centred features this reduces to (Kornblith et al.'s code)
    <K, L> - n/(n-2) diag(K).diag(L) + tr(K) tr(L) / ((n-1)(n-2)).
    """
    n = A.shape[0]
    if n < 4:
        raise ValueError("Debiased CKA needs at least 4 samples.")
    diag_a, diag_b = A.square().sum(1), B.square().sum(1)
    return inner - n / (n - 2) * (diag_a @ diag_b) + diag_a.sum() * diag_b.sum() / ((n - 1) * (n - 2))


def linear_cka(X: Array, Y: Array, debiased: bool = False) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019).

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) with column-centred X and Y: 1 for
    representations equal up to a rotation, isotropic scaling and shift; 0 for orthogonal
    ones. With `debiased`, each HSIC is the unbiased estimator (Song et al. 2012; Nguyen et
    al. 2020), which removes the upward bias of finite samples (for few samples and many
    features, plain CKA is far above 0 even for independent data).

    Args:
        X: (N, p) and Y: (N, q), the same N samples.
        debiased: use the unbiased HSIC estimator (needs N >= 4).
    """
    X, Y = _centred(X), _centred(Y)
    _same_samples(X, Y)
    if Y.device != X.device:
        Y = Y.to(X.device)
    xy, xx, yy = _inner_of_grams(X, Y), _inner_of_grams(X, X), _inner_of_grams(Y, Y)
    if debiased:
        xy, xx, yy = _debiased_inner(xy, X, Y), _debiased_inner(xx, X, X), _debiased_inner(yy, Y, Y)
    return _ratio(xy, xx, yy)


def _ratio(xy: torch.Tensor | float, xx: torch.Tensor | float, yy: torch.Tensor | float) -> float:
    """xy / sqrt(xx yy); NaN when a representation has no variance."""
    denominator = math.sqrt(max(float(xx), 0.0) * max(float(yy), 0.0))
    return float(xy) / denominator if denominator > 0 else float("nan")


def rbf_gram(X: Array, sigma_frac: float = 0.8) -> torch.Tensor:
    """K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2)), sigma = sigma_frac * the median distance.

    The median is over distinct pairs (i < j). Kornblith et al.'s code takes it over all
    entries, zeros of the diagonal included, which gives a slightly smaller sigma.
    """
    X = as_float64(X)
    distances = torch.cdist(X, X)
    sigma = sigma_frac * _median_off_diagonal(distances)
    if sigma <= 0:
        return torch.ones_like(distances)  # all samples equal: one kernel value
    return torch.exp(-distances.square() / (2 * sigma**2))


def _median_off_diagonal(D: torch.Tensor) -> float:
    """The median of a symmetric matrix's entries off the diagonal, i.e. over pairs i < j
    (each pair appears twice, which leaves the median as it is); 0 for one sample."""
    n = len(D)
    if n < 2:
        return 0.0
    off = D.flatten()[1:].view(n - 1, n + 1)[:, :-1]  # a view without the diagonal
    return float(np.median(off.cpu().numpy()))  # numpy's selection: 4x torch's kthvalue here


def centre_gram(K: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """Centre a Gram matrix so that <centred K, centred L> is (proportional to) HSIC.

    Plain: H K H with H = I - 11^T/n. Unbiased: the U-centring of Székely & Rizzo (2014),
    zero diagonal and row means subtracted with the (n-2) and (n-1) corrections, for which
    <K, L> is n(n-3) times the unbiased HSIC estimator of Song et al. (2012).
    """
    n = K.shape[0]
    if not unbiased:
        K = K - K.mean(dim=0, keepdim=True)
        return K - K.mean(dim=1, keepdim=True)
    if n < 4:
        raise ValueError("Debiased CKA needs at least 4 samples.")
    K = K.clone()
    K.fill_diagonal_(0)
    means = K.sum(dim=0) / (n - 2)
    means = means - means.sum() / (2 * (n - 1))
    K = K - means[:, None] - means[None, :]
    K.fill_diagonal_(0)
    return K


def rbf_cka(X: Array, Y: Array, sigma_frac: float = 0.8, debiased: bool = False) -> float:
    """CKA with Gaussian kernels, bandwidth a fraction of the median distance (Kornblith et al.
    2019). Uses (N, N) Gram matrices, so N up to a few thousand.

    Args:
        X: (N, p) and Y: (N, q), the same N samples.
        sigma_frac: sigma as a fraction of the median pairwise distance (0.8 is common;
            small values look at local structure, large ones approach linear CKA).
        debiased: use the unbiased HSIC estimator.
    """
    K, L = rbf_gram(X, sigma_frac), rbf_gram(Y, sigma_frac)
    _same_samples(K, L)
    if L.device != K.device:
        L = L.to(K.device)
    K, L = centre_gram(K, debiased), centre_gram(L, debiased)
    return _ratio((K * L).sum(), K.square().sum(), L.square().sum())


class MinibatchCKA:
    """Linear CKA accumulated over minibatches (Nguyen et al. 2021).

    Each minibatch adds its unbiased HSIC estimates of (X, Y), (X, X) and (Y, Y); CKA is the
    ratio of the sums. Unbiased estimates average to the population value, so the result
    converges to full-data CKA without ever holding all the activations.

        cka = MinibatchCKA()
        for xb, yb in batches: cka.update(xb, yb)
        cka.value
    """

    def __init__(self):
        self.xy = self.xx = self.yy = 0.0

    def update(self, X: Array, Y: Array) -> None:
        """Add one minibatch: (n, p) and (n, q) activations of the same n >= 4 samples."""
        X, Y = _centred(X), _centred(Y)
        _same_samples(X, Y)
        if Y.device != X.device:
            Y = Y.to(X.device)
        n = len(X)
        scale = 1.0 / (n * (n - 3))
        self.xy += scale * float(_debiased_inner(_inner_of_grams(X, Y), X, Y))
        self.xx += scale * float(_debiased_inner(_inner_of_grams(X, X), X, X))
        self.yy += scale * float(_debiased_inner(_inner_of_grams(Y, Y), Y, Y))

    @property
    def value(self) -> float:
        return _ratio(self.xy, self.xx, self.yy)


def minibatch_cka(X: Array, Y: Array, batch: int = 256, seed: int = 0) -> float:
    """Linear CKA from minibatches of a random order of the samples (Nguyen et al. 2021).

    The order is shuffled because data sorted by class would give minibatches of one class.

    Args:
        X: (N, p) and Y: (N, q), the same N samples.
        batch: samples per minibatch (at least 4); the N // batch minibatches differ in size
            by at most one, so no sample is dropped.
        seed: seed of the order.
    """
    X, Y = as_float64(X), as_float64(Y)
    _same_samples(X, Y)
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
    n_batches = max(1, len(X) // batch)
    accumulator = MinibatchCKA()
    for index in torch.tensor_split(order, n_batches):
        accumulator.update(X[index.to(X.device)], Y[index.to(Y.device)])
    return accumulator.value


def input_target_alignment(H: Array, X: Array, Y: Array, debiased: bool = False) -> dict[str, float]:
    """How much of the input's and of the target's structure a representation keeps.

    Alleman et al. (2024): with one hidden layer, tanh representations follow the target,
    ReLU ones keep more of the input.

    Args:
        H: (N, features) the representation.
        X: (N, ...) the inputs.
        Y: (N,) integer class labels (taken one-hot) or (N,) / (N, O) real targets.
        debiased: use debiased linear CKA.

    Returns:
        {"input": linear CKA(H, X), "target": linear CKA(H, Y)}.
    """
    return {"input": linear_cka(H, X, debiased), "target": linear_cka(H, target_matrix(Y), debiased)}


def target_matrix(Y: Array) -> torch.Tensor:
    """Integer labels -> one-hot (N, C); real targets -> (N, O) float64."""
    Y = torch.as_tensor(Y)
    if Y.ndim == 1 and not Y.is_floating_point():
        return torch.nn.functional.one_hot(Y.long().cpu()).to(torch.float64)
    return as_float64(Y)


# ---------------------------------------------------------------- RSA


def rdm(X: Array, metric: str = "correlation") -> np.ndarray:
    """Representational dissimilarity matrix: how unlike each pair of samples' patterns are.

    Args:
        X: (N, features), one activity pattern per sample (stimulus).
        metric: "correlation" (1 - Pearson correlation of the two patterns, rsatoolbox's
            default) or "euclidean" (the distance; rsatoolbox's "euclidean" is its square
            divided by the number of features, which ranks pairs the same way).

    Returns:
        (N, N) float64, symmetric with a zero diagonal.
    """
    X = as_float64(X)
    if metric == "correlation":
        Z = X - X.mean(dim=1, keepdim=True)
        Z = Z / Z.norm(dim=1, keepdim=True)
        D = 1 - Z @ Z.mT
    elif metric == "euclidean":
        D = torch.cdist(X, X)
    else:
        raise ValueError(f"RDM metric must be 'correlation' or 'euclidean', not '{metric}'.")
    D = (D + D.mT) / 2
    D.fill_diagonal_(0)
    return D.cpu().numpy()


def compare_rdms(A: Array, B: Array, method: str = "spearman") -> float:
    """Correlation of two RDMs over their upper triangles (the diagonal excluded), as
    rsatoolbox compares RDMs.

    Args:
        A, B: (N, N) dissimilarity matrices over the same samples.
        method: "spearman" (ranks, ties averaged; for RDMs on different scales) or "pearson".
    """
    from scipy.stats import rankdata

    A, B = as_float64(A).cpu().numpy(), as_float64(B).cpu().numpy()
    if A.shape != B.shape:
        raise ValueError(f"The RDMs must have the same shape; got {A.shape} and {B.shape}.")
    upper = np.triu_indices(len(A), k=1)
    a, b = A[upper], B[upper]
    if method == "spearman":
        a, b = rankdata(a), rankdata(b)
    elif method != "pearson":
        raise ValueError(f"RDM comparison must be 'spearman' or 'pearson', not '{method}'.")
    return float(np.corrcoef(a, b)[0, 1])


# ---------------------------------------------------------------- margins


def classification_margin(logits: Array, labels: Array) -> np.ndarray:
    """The logit of each sample's true class minus the largest other logit.

    Positive where the sample is classified correctly, negative where not; its size says how
    far the sample is from the decision boundary in logit units.

    Args:
        logits: (N, C) outputs, C >= 2.
        labels: (N,) integer classes 0..C-1.

    Returns:
        (N,) float64.
    """
    Z = as_float64(logits)
    y = torch.as_tensor(labels).long().to(Z.device)
    if Z.shape[1] < 2:
        raise ValueError("A margin needs at least two classes (two outputs).")
    true = Z.gather(1, y[:, None])[:, 0]
    others = Z.scatter(1, y[:, None], -math.inf)
    return (true - others.max(dim=1).values).cpu().numpy()


# ---------------------------------------------------------------- neural collapse


def neural_collapse(features: Array, labels: Array, weight: Array | None = None,
                    bias: Array | None = None) -> dict[str, float]:
    """Neural-collapse measures of last-layer features (Papyan, Han & Donoho 2020).

    With mu_c the class means, mu_G their mean and M the (C, D) matrix of centred class means
    mu_c - mu_G (the global mean is the mean of class means, so unequal class sizes do not
    tilt M), all four go to 0 as training collapses:

    - nc1, within-class variability: tr(S_W S_B^+) / C, S_W the within-class covariance
      (averaged over all samples) and S_B = M^T M / C the between-class covariance.
    - nc2_norm, equinorm: coefficient of variation (std / mean) of the norms ||mu_c - mu_G||.
    - nc2_angle, equiangularity: the mean over pairs c != c' of |cos(mu_c - mu_G, mu_c' - mu_G)
      + 1/(C-1)|, the distance from a simplex equiangular tight frame (Papyan et al. Fig. 4).
    - nc3, self-duality: ||W/||W||_F - M/||M||_F||_F with W the (C, D) classifier weights
      (Papyan et al. plot its square).
    - nc4, nearest class centre: the fraction of samples on which the network's prediction
      argmax(W h + b) differs from the nearest class mean argmin_c ||h - mu_c||.

    Args:
        features: (N, D) penultimate-layer features.
        labels: (N,) integer classes 0..C-1 (each class present).
        weight: (C, D) last-layer weights; without it nc3 and nc4 are NaN.
        bias: (C,) last-layer bias, for nc4.

    Returns:
        {"nc1", "nc2_norm", "nc2_angle", "nc3", "nc4"} as floats.
    """
    H = as_float64(features).cpu()
    y = torch.as_tensor(labels).long().cpu()
    classes = torch.unique(y)
    means = torch.stack([H[y == c].mean(dim=0) for c in classes])  # (C, D)
    M = means - means.mean(dim=0)
    C = len(classes)
    out = {"nc1": _within_over_between(H - means[torch.searchsorted(classes, y)], M),
           "nc2_norm": float("nan"), "nc2_angle": float("nan"),
           "nc3": float("nan"), "nc4": float("nan")}
    norms = M.norm(dim=1)
    if C > 1 and norms.min() > 0:
        out["nc2_norm"] = float(norms.std(unbiased=False) / norms.mean())
        unit = M / norms[:, None]
        cosines = unit @ unit.mT
        off_diagonal = ~torch.eye(C, dtype=torch.bool)
        out["nc2_angle"] = float((cosines[off_diagonal] + 1 / (C - 1)).abs().mean())
    if weight is not None:
        W = as_float64(weight).cpu()
        W = W[classes]  # rows of the classes present, in the order of M
        out["nc3"] = float((W / W.norm() - M / M.norm()).norm())
        logits = H @ W.mT + (as_float64(bias).cpu().reshape(-1)[classes] if bias is not None else 0)
        nearest_mean = torch.cdist(H, means).argmin(dim=1)
        out["nc4"] = float((logits.argmax(dim=1) != nearest_mean).double().mean())
    return out


def _within_over_between(residuals: torch.Tensor, M: torch.Tensor, rcond: float = 1e-6) -> float:
    """tr(S_W S_B^+) / C without forming D x D matrices.

    With M = U S V^T, S_B^+ = C V S^-2 V^T over the singular values kept (eigenvalues of S_B
    above rcond times the largest, as Papyan et al.'s pinverse), so
    tr(S_W S_B^+) / C = sum_k (v_k^T S_W v_k) / s_k^2 with v_k^T S_W v_k = ||R v_k||^2 / N.
    """
    _, S, Vh = torch.linalg.svd(M, full_matrices=False)
    if len(S) == 0 or S[0] == 0:
        return float("nan")  # one class, or all class means equal
    keep = S**2 > rcond * S[0] ** 2
    projected = residuals @ Vh[keep].mT  # (N, k)
    within = projected.square().mean(dim=0)
    return float((within / S[keep] ** 2).sum())


# ---------------------------------------------------------------- dimensionality


def effective_rank(X: Array, center: bool = False) -> float:
    """exp(entropy of the normalized singular values) (Roy & Vetterli 2007).

    p_k = s_k / sum s, erank = exp(-sum p_k log p_k): k for k equal singular values, between 1
    and the rank otherwise. Computed on X itself by default, as Roy & Vetterli (and RankMe)
    do; with `center` on the column-centred X, so that a common offset (e.g. all-positive
    ReLU outputs) does not count as a direction.
    """
    X = _centred(X) if center else as_float64(X)
    s = torch.linalg.svdvals(X)
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]  # 0 log 0 = 0
    return float(torch.exp(-(p * p.log()).sum()))


def participation_ratio(X: Array) -> float:
    """(sum lambda)^2 / sum lambda^2 over the eigenvalues lambda of the covariance of X.

    1 when one direction holds all variance, D for D directions of equal variance; a soft
    count of the dimensions the representation uses (Gao et al. 2017).
    """
    eigenvalues = torch.linalg.svdvals(_centred(X)).square()  # proportional to the covariance's
    total = eigenvalues.sum()
    return float(total**2 / eigenvalues.square().sum()) if total > 0 else 0.0


# ---------------------------------------------------------------- matching units


def unit_correlations(A: Array, B: Array) -> np.ndarray:
    """(p, q) Pearson correlations between the units (columns) of A (N, p) and B (N, q).

    A unit that never varies (a dead ReLU) correlates 0 with everything.
    """
    A, B = _centred(A), _centred(B)
    _same_samples(A, B)
    if B.device != A.device:
        B = B.to(A.device)
    a_norms, b_norms = A.norm(dim=0), B.norm(dim=0)
    a_norms[a_norms == 0] = math.inf
    b_norms[b_norms == 0] = math.inf
    return ((A / a_norms).mT @ (B / b_norms)).cpu().numpy()


def match_units(A: Array, B: Array, absolute: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of the units of two representations of the same samples, with the
    largest total correlation (Li et al. 2016, "Convergent learning"; Hungarian algorithm).

    By default the signed correlation is maximized: for ReLU-like units a unit and its
    negative compute different things. `absolute` maximizes |correlation| instead (for
    odd activations such as tanh, where a sign flip is a symmetry).

    Args:
        A: (N, p) and B: (N, q) activations of the same N samples.
        absolute: match on |correlation|.

    Returns:
        permutation (p,) int: unit i of A matches unit permutation[i] of B, so that
            B[:, permutation] lines up with A (-1 where p > q leaves a unit unmatched);
        correlations (p,): the matched units' correlation (signed; NaN where unmatched).
    """
    from scipy.optimize import linear_sum_assignment

    corr = unit_correlations(A, B)
    rows, cols = linear_sum_assignment(np.abs(corr) if absolute else corr, maximize=True)
    permutation = np.full(corr.shape[0], -1, dtype=np.int64)
    correlations = np.full(corr.shape[0], np.nan)
    permutation[rows] = cols
    correlations[rows] = corr[rows, cols]
    return permutation, correlations
