"""Datasets: the built-in toy problems and the user's own files, as one `Dataset` type.

Every built-in is generated locally (nothing is downloaded) and is a deterministic
function of its options: the same `seed` gives identical tensors, another seed other data.
Features are always flattened to `(N, D)`; `input_shape` remembers the natural shape of one
sample (an 8 x 8 image, a length-40 signal) for models and plots that want it.

    >>> from engine import data
    >>> data.names()[:3]
    ['moons', 'circles', 'spirals']
    >>> data.load("moons", noise=0.2).describe()
    'moons: 800 train / 200 test, 2 features, 2 classes'

User data comes in through `from_arrays`, `from_npz` and `from_csv`. Anything wrong with it
(or with a built-in's options) raises `ValueError` with a sentence a non-programmer can act on.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import difflib
import functools
import io
import math
import numbers
import os
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

__all__ = ["Dataset", "names", "options", "load", "from_arrays", "from_npz", "from_csv"]

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)

MIN_SAMPLES = 20  # below this a train/test split of a built-in says nothing
MAX_SAMPLES = 1_000_000  # guards memory against a typo like n=10**9
MIN_USER_SAMPLES = 10  # a user's data must leave something to train on and to test on
MAX_CLASSES = 256  # more than this is almost surely a regression target, or a mistake
MAX_INFERRED_CLASSES = 50  # whole-number targets with more distinct values count as regression


# ---------------------------------------------------------------------------------------
# The dataset type
# ---------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """A train/test pair of tensors plus what is needed to use, show and rebuild it.

    Attributes:
        name: a short display name ("moons", or the stem of an uploaded file).
        x_train, x_test: float32 features of shape (N, D), always flattened.
        y_train, y_test: int64 labels (N,) for classification; float32 targets (N, O)
            for regression.
        task: "classification" or "regression".
        n_classes: the number of classes; 0 for regression.
        input_shape: the natural shape of one sample, e.g. (2,) or (1, 8, 8).
        options: the JSON-serializable options that made it, for reproducing it.
        bounds: (min, max) over the training inputs, e.g. for level-set search boxes.
        target_fn: for synthetic regression, the noiseless target as a function of numpy
            inputs (M, D) -> (M, O); None otherwise. Not serialized.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: str
    n_classes: int
    input_shape: tuple[int, ...]
    options: dict
    bounds: tuple[float, float]
    target_fn: Callable | None = None

    @property
    def n_features(self) -> int:
        """D, the number of (flattened) input features."""
        return int(self.x_train.shape[1])

    @property
    def n_outputs(self) -> int:
        """How many outputs a model needs: one per class, or one per regression target."""
        if self.task == CLASSIFICATION:
            return self.n_classes
        return int(self.y_train.shape[1])

    def to(self, device) -> Dataset:
        """A copy with the four tensors on `device` (a torch.device or a string like "cuda")."""
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def describe(self) -> str:
        """One line for people, e.g. "moons: 800 train / 200 test, 2 features, 2 classes"."""
        if self.task == CLASSIFICATION:
            what = _count(self.n_classes, "class", "classes")
        else:
            what = _count(self.n_outputs, "output", "outputs")
        return (
            f"{self.name}: {len(self.x_train)} train / {len(self.x_test)} test, "
            f"{_count(self.n_features, 'feature', 'features')}, {what}"
        )


def _count(k: int, one: str, many: str) -> str:
    return f"{k} {one if k == 1 else many}"


def _make_dataset(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    task: str,
    n_classes: int,
    input_shape: tuple[int, ...],
    options: dict,
    target_fn: Callable | None = None,
) -> Dataset:
    """Turn checked numpy arrays into a Dataset: flatten, cast and compute the bounds.

    Regression targets of shape (N,) become (N, 1). torch.tensor copies, so the Dataset
    never shares memory with a cached or caller-owned array.
    """
    label_dtype = torch.int64 if task == CLASSIFICATION else torch.float32

    def features(x):
        return torch.tensor(np.asarray(x).reshape(len(x), -1), dtype=torch.float32)

    def targets(y):
        y = np.asarray(y)
        if task == REGRESSION:
            y = y.reshape(len(y), -1)
        return torch.tensor(y, dtype=label_dtype)

    x_train_t = features(x_train)
    return Dataset(
        name=name,
        x_train=x_train_t,
        y_train=targets(y_train),
        x_test=features(x_test),
        y_test=targets(y_test),
        task=task,
        n_classes=int(n_classes),
        input_shape=tuple(int(s) for s in input_shape),
        options=options,
        bounds=(float(x_train_t.min()), float(x_train_t.max())),
        target_fn=target_fn,
    )


def _split_indices(n: int, test_fraction: float, rng: np.random.Generator):
    """A seeded random split of range(n): (train indices, test indices), neither empty."""
    n_test = min(max(round(n * test_fraction), 1), n - 1)
    order = rng.permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


# ---------------------------------------------------------------------------------------
# Option checking
# ---------------------------------------------------------------------------------------


class _Options:
    """The options given for one built-in, read and checked one at a time.

    Each reader checks its value, raises a ValueError that names the option and the
    allowed range, and records the clean value in `clean`, which becomes Dataset.options.
    """

    def __init__(self, dataset: str, values: dict):
        self.dataset = dataset
        self.values = values
        self.clean: dict = {}

    def _fail(self, key: str, requirement: str):
        raise ValueError(
            f"The {self.dataset} option '{key}' must be {requirement}; "
            f"got {self.values[key]!r}."
        )

    def integer(self, key: str, low: int, high: int | None = None) -> int:
        """A whole number in [low, high]; a float like 100.0 (from a form) is accepted."""
        value = self.values[key]
        if high is None:
            requirement = f"a whole number of at least {low}"
        else:
            requirement = f"a whole number from {low} to {high}"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            self._fail(key, requirement)
        if not math.isfinite(value) or value != int(value):
            self._fail(key, requirement)
        value = int(value)
        if value < low or (high is not None and value > high):
            self._fail(key, requirement)
        self.clean[key] = value
        return value

    def number(self, key: str, low: float, high: float | None = None) -> float:
        """A finite number in [low, high]."""
        value = self.values[key]
        if high is None:
            requirement = f"a number of at least {low}"
        else:
            requirement = f"a number from {low} to {high}"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            self._fail(key, requirement)
        value = float(value)
        if not math.isfinite(value) or value < low or (high is not None and value > high):
            self._fail(key, requirement)
        self.clean[key] = value
        return value

    def fraction(self, key: str) -> float:
        """A number strictly between 0 and 1, like a test fraction."""
        value = self.values[key]
        requirement = "a number strictly between 0 and 1"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            self._fail(key, requirement)
        value = float(value)
        if not 0.0 < value < 1.0:
            self._fail(key, requirement)
        self.clean[key] = value
        return value

    def seed(self, key: str = "seed") -> int:
        """A non-negative whole number that fixes the random generator."""
        return self.integer(key, 0, 2**32 - 1)

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        """One of a few named settings."""
        value = self.values[key]
        if value not in choices:
            self._fail(key, "one of " + ", ".join(repr(c) for c in choices))
        self.clean[key] = value
        return value

    def numbers(self, key: str, low: float | None = None, whole: bool = False) -> list:
        """A non-empty list of finite numbers, each at least `low` if given (whole numbers if asked)."""
        value = self.values[key]
        requirement = "a non-empty list of " + ("whole numbers" if whole else "numbers")
        if low is not None:
            requirement += f", each at least {low}"
        low = -math.inf if low is None else low
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) == 0:
            self._fail(key, requirement)
        items = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, numbers.Real):
                self._fail(key, requirement)
            item = float(item)
            if not math.isfinite(item) or item < low or (whole and item != int(item)):
                self._fail(key, requirement)
            items.append(int(item) if whole else item)
        self.clean[key] = items
        return items

    def same_length(self, first: str, second: str):
        """Refuse two lists that must pair up (like frequencies and amplitudes) but do not."""
        if len(self.clean[first]) != len(self.clean[second]):
            raise ValueError(
                f"The {self.dataset} options '{first}' and '{second}' must have the same "
                f"length; got {len(self.clean[first])} and {len(self.clean[second])}."
            )


# ---------------------------------------------------------------------------------------
# Built-in: 2-D classification toys
# ---------------------------------------------------------------------------------------


def _standardize(x_train: np.ndarray, x_test: np.ndarray):
    """Centre on the training mean and divide by one common scale.

    One scale for all features (not one per feature) keeps the shapes' aspect ratios, so
    moons still look like moons; the mean per-feature variance of the training set becomes 1.
    """
    mean = x_train.mean(axis=0)
    scale = math.sqrt(float(x_train.var(axis=0).mean())) or 1.0
    return (x_train - mean) / scale, (x_test - mean) / scale


def _toy_classification(name: str, x: np.ndarray, y: np.ndarray, opts: _Options) -> Dataset:
    """Split a 2-D point cloud with labels, standardize it and wrap it as a Dataset."""
    test_fraction = opts.fraction("test_fraction")
    rng = np.random.default_rng([opts.seed(), 1])  # a stream of its own, apart from the points
    train, test = _split_indices(len(x), test_fraction, rng)
    x_train, x_test = _standardize(x[train], x[test])
    n_classes = int(y.max()) + 1
    return _make_dataset(
        name, x_train, y[train], x_test, y[test], CLASSIFICATION, n_classes, (2,), opts.clean
    )


def _class_sizes(n: int, k: int) -> list[int]:
    """Split n samples over k classes as evenly as possible."""
    return [n // k + (1 if c < n % k else 0) for c in range(k)]


def _moons(opts: _Options) -> Dataset:
    """Two interleaving half circles (scikit-learn's make_moons); noise is the std of the jitter."""
    from sklearn.datasets import make_moons

    n = opts.integer("n", MIN_SAMPLES, MAX_SAMPLES)
    noise = opts.number("noise", 0.0)
    seed = opts.seed()
    x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    return _toy_classification("moons", x, y, opts)


def _circles(opts: _Options) -> Dataset:
    """A small circle inside a large one (make_circles); `factor` is the ratio of their radii."""
    from sklearn.datasets import make_circles

    n = opts.integer("n", MIN_SAMPLES, MAX_SAMPLES)
    noise = opts.number("noise", 0.0)
    factor = opts.number("factor", 0.0, 0.99)
    seed = opts.seed()
    x, y = make_circles(n_samples=n, noise=noise, factor=factor, random_state=seed)
    return _toy_classification("circles", x, y, opts)


def _spirals(opts: _Options) -> Dataset:
    """`arms` interleaved spirals, one class per arm, each winding `turns` times around.

    Arm c at parameter s in [0, 1] sits at radius s and angle 2*pi*(turns*s + c/arms);
    Drawing s = sqrt(u) for uniform u keeps the points from crowding at the centre.
    """
    n = opts.integer("n", MIN_SAMPLES, MAX_SAMPLES)
    arms = opts.integer("arms", 2, 10)
    turns = opts.number("turns", 0.25, 5.0)
    noise = opts.number("noise", 0.0)
    rng = np.random.default_rng(opts.seed())
    xs, ys = [], []
    for arm, size in enumerate(_class_sizes(n, arms)):
        s = np.sqrt(rng.uniform(0.0, 1.0, size))
        angle = 2 * np.pi * (turns * s + arm / arms)
        xs.append(np.stack([s * np.cos(angle), s * np.sin(angle)], axis=1))
        ys.append(np.full(size, arm))
    x = np.concatenate(xs) + noise * rng.normal(size=(n, 2))
    return _toy_classification("spirals", x, np.concatenate(ys), opts)


def _xor(opts: _Options) -> Dataset:
    """Class 1 where the two coordinates have opposite signs, class 0 where they agree.

    style "blobs": four Gaussian blobs of std `noise` centred at (+-1, +-1).
    style "uniform": points uniform in the square [-1, 1]^2, labelled by the sign of x1*x2
    before a Gaussian jitter of std `noise` is added (so noise blurs the boundary).
    """
    n = opts.integer("n", MIN_SAMPLES, MAX_SAMPLES)
    noise = opts.number("noise", 0.0)
    style = opts.choice("style", ("blobs", "uniform"))
    rng = np.random.default_rng(opts.seed())
    if style == "blobs":
        corner = rng.integers(0, 4, n)  # its two bits pick the signs of the two coordinates
        clean = np.stack([np.where(corner % 2, 1.0, -1.0), np.where(corner // 2, 1.0, -1.0)], axis=1)
    else:
        clean = rng.uniform(-1.0, 1.0, size=(n, 2))
    y = (clean[:, 0] * clean[:, 1] < 0).astype(np.int64)
    x = clean + noise * rng.normal(size=(n, 2))
    return _toy_classification("xor", x, y, opts)


def _gaussians(opts: _Options) -> Dataset:
    """`n_classes` isotropic Gaussian blobs of std `noise`, centred evenly on a circle of radius 2."""
    n = opts.integer("n", MIN_SAMPLES, MAX_SAMPLES)
    k = opts.integer("n_classes", 2, 20)
    noise = opts.number("noise", 0.0)
    rng = np.random.default_rng(opts.seed())
    y = np.concatenate([np.full(size, c) for c, size in enumerate(_class_sizes(n, k))])
    angles = 2 * np.pi * np.arange(k) / k
    centres = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    x = centres[y] + noise * rng.normal(size=(n, 2))
    return _toy_classification("gaussians", x, y, opts)


# ---------------------------------------------------------------------------------------
# Built-in: synthetic regression with a known target function
# ---------------------------------------------------------------------------------------


def _synthetic_regression(
    name: str, x: np.ndarray, target_fn: Callable, rng: np.random.Generator, opts: _Options
) -> Dataset:
    """Label inputs with target_fn plus Gaussian noise of std `noise`, then split.

    The inputs are rounded to float32 *before* the target is computed, so target_fn applied
    to the stored inputs reproduces the noiseless targets exactly. The noise is on both
    splits; target_fn gives the clean truth for evaluation.
    """
    noise = opts.number("noise", 0.0)
    test_fraction = opts.fraction("test_fraction")
    x = x.astype(np.float32)
    clean = target_fn(x)
    y = clean + noise * rng.normal(size=clean.shape)  # independent noise on every output
    train, test = _split_indices(len(x), test_fraction, rng)
    return _make_dataset(
        name, x[train], y[train], x[test], y[test], REGRESSION, 0, x.shape[1:], opts.clean, target_fn
    )


def _sine_sum(x, frequencies, amplitudes) -> np.ndarray:
    """sum_k a_k * sin(pi * f_k * x) for inputs x of shape (M, 1); returns (M, 1) float64."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, 1)
    return sum(a * np.sin(np.pi * f * x) for f, a in zip(frequencies, amplitudes))


def _wave(opts: _Options) -> Dataset:
    """1-D regression for spectral bias: y = sum_k a_k sin(pi f_k x) on x in [-1, 1].

    With this convention frequency f makes f full periods over the interval [-1, 1], so
    (1, 4, 10) mixes a slow, a middling and a fast wave that a network learns in that order.
    spacing "random" draws x uniformly; "even" puts x on a regular grid (then split at random).
    """
    n = opts.integer("n", MIN_SAMPLES, MAX_SAMPLES)
    frequencies = opts.numbers("frequencies", 0.0)
    amplitudes = opts.numbers("amplitudes")
    opts.same_length("frequencies", "amplitudes")
    spacing = opts.choice("spacing", ("random", "even"))
    rng = np.random.default_rng(opts.seed())
    if spacing == "random":
        x = rng.uniform(-1.0, 1.0, size=(n, 1))
    else:
        x = np.linspace(-1.0, 1.0, n).reshape(n, 1)
    target_fn = functools.partial(_sine_sum, frequencies=frequencies, amplitudes=amplitudes)
    return _synthetic_regression("wave", x, target_fn, rng, opts)


def _circle_modes(points, frequencies, amplitudes) -> np.ndarray:
    """sum_k a_k * sin(k * t) with t = atan2(x2, x1), for points (M, 2); returns (M, 1)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    t = np.arctan2(points[:, 1], points[:, 0]).reshape(-1, 1)
    return sum(a * np.sin(k * t) for k, a in zip(frequencies, amplitudes))


def _circle(opts: _Options) -> Dataset:
    """Regression on the unit circle: x = (cos t, sin t), y = sum_k a_k sin(k t).

    On the circle the kernels of wide networks have Fourier modes as eigenfunctions, so each
    frequency k is one "mode" whose learning speed can be watched. Frequencies are whole
    numbers so the target is continuous around the circle. spacing "even" puts the n points
    at equal angles (then splits at random); "random" draws the angles uniformly.
    """
    n = opts.integer("n", MIN_SAMPLES, MAX_SAMPLES)
    frequencies = opts.numbers("frequencies", 1, whole=True)
    amplitudes = opts.numbers("amplitudes")
    opts.same_length("frequencies", "amplitudes")
    spacing = opts.choice("spacing", ("even", "random"))
    rng = np.random.default_rng(opts.seed())
    if spacing == "even":
        t = 2 * np.pi * np.arange(n) / n
    else:
        t = rng.uniform(0.0, 2 * np.pi, n)
    x = np.stack([np.cos(t), np.sin(t)], axis=1)
    target_fn = functools.partial(_circle_modes, frequencies=frequencies, amplitudes=amplitudes)
    return _synthetic_regression("circle", x, target_fn, rng, opts)


def _teacher_forward(x, w1, b1, w2, activation) -> np.ndarray:
    """The teacher network: act(x @ w1 + b1) @ w2, for inputs (M, d); returns (M, outputs)."""
    hidden = np.asarray(x, dtype=np.float64) @ w1 + b1
    hidden = np.tanh(hidden) if activation == "tanh" else np.maximum(hidden, 0.0)
    return hidden @ w2


def _teacher(opts: _Options) -> Dataset:
    """Inputs x ~ N(0, I_d) labelled by a random two-layer teacher network (student-teacher setup).

    The teacher is act(x W1 + b1) W2 with act tanh or relu, W1 ~ N(0, 1/d), b1 ~ N(0, 1) and
    W2 ~ N(0, 1/width): the scalings keep the hidden pre-activations and the outputs of order
    one. `teacher_seed` fixes the teacher; `seed` fixes the inputs and the noise, so several
    datasets can share one teacher.
    """
    n = opts.integer("n", MIN_SAMPLES, MAX_SAMPLES)
    d = opts.integer("d", 1, 4096)
    width = opts.integer("width", 1, 4096)
    outputs = opts.integer("outputs", 1, 100)
    activation = opts.choice("activation", ("tanh", "relu"))
    teacher_rng = np.random.default_rng(opts.seed("teacher_seed"))
    w1 = teacher_rng.normal(size=(d, width)) / math.sqrt(d)
    b1 = teacher_rng.normal(size=width)
    w2 = teacher_rng.normal(size=(width, outputs)) / math.sqrt(width)
    rng = np.random.default_rng(opts.seed())
    x = rng.normal(size=(n, d))
    target_fn = functools.partial(_teacher_forward, w1=w1, b1=b1, w2=w2, activation=activation)
    return _synthetic_regression("teacher", x, target_fn, rng, opts)


# ---------------------------------------------------------------------------------------
# Built-in: modular arithmetic (grokking), digits and MNIST-1D
# ---------------------------------------------------------------------------------------


def _modular(opts: _Options) -> Dataset:
    """All p*p pairs (a, b) labelled (a + b) mod p; the input is one-hot(a) next to one-hot(b).

    A random `train_fraction` of the pairs is the training set and the rest the test set, the
    classic setting in which a network first memorizes and much later generalizes (grokking).
    """
    p = opts.integer("p", 2, MAX_CLASSES)
    train_fraction = opts.fraction("train_fraction")
    rng = np.random.default_rng(opts.seed())
    a, b = np.divmod(np.arange(p * p), p)
    eye = np.eye(p, dtype=np.float32)
    x = np.concatenate([eye[a], eye[b]], axis=1)
    y = (a + b) % p
    train, test = _split_indices(p * p, 1.0 - train_fraction, rng)
    return _make_dataset(
        "modular", x[train], y[train], x[test], y[test], CLASSIFICATION, p, (2 * p,), opts.clean
    )


def _digits(opts: _Options) -> Dataset:
    """scikit-learn's 1,797 handwritten 8 x 8 digits (shipped with it), pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    test_fraction = opts.fraction("test_fraction")
    rng = np.random.default_rng(opts.seed())
    bunch = load_digits()
    x = bunch.data / 16.0  # the pixels are counts from 0 to 16
    y = bunch.target
    train, test = _split_indices(len(x), test_fraction, rng)
    return _make_dataset(
        "digits", x[train], y[train], x[test], y[test], CLASSIFICATION, 10, (1, 8, 8), opts.clean
    )


@functools.lru_cache(maxsize=8)  # a few MB each at the default size
def _mnist1d_arrays(num_samples: int, seed: int, test_fraction: float):
    """Generate MNIST-1D locally (slow: seconds), memoized per process by its options.

    mnist1d seeds Python's and numpy's global generators; their states are restored
    afterwards so that generating data never changes anyone else's random numbers.
    The arrays are made read-only because the cache shares them between callers.
    """
    from mnist1d.data import get_dataset_args, make_dataset  # heavy: imports matplotlib

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    args.train_split = 1.0 - test_fraction
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(args)  # never get_dataset, which downloads
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    arrays = (raw["x"], raw["y"], raw["x_test"], raw["y_test"])
    for array in arrays:
        array.setflags(write=False)
    return arrays


def _mnist1d(opts: _Options) -> Dataset:
    """MNIST-1D: ten classes of length-40 signals, generated by the `mnist1d` package.

    num_samples is rounded down to a multiple of 10 (equal classes). The default seed 42 is
    the package's own default.
    """
    num_samples = opts.integer("num_samples", 100, 100_000)
    test_fraction = opts.fraction("test_fraction")
    seed = opts.seed()
    x_train, y_train, x_test, y_test = _mnist1d_arrays(num_samples, seed, test_fraction)
    if len(x_train) == 0 or len(x_test) == 0:
        raise ValueError(
            f"The mnist1d option 'test_fraction' of {test_fraction} leaves no training or no test "
            f"samples out of {num_samples}; choose a fraction nearer 0.5 or more samples."
        )
    return _make_dataset("mnist1d", x_train, y_train, x_test, y_test, CLASSIFICATION, 10, (1, 40), opts.clean)


# ---------------------------------------------------------------------------------------
# The registry of built-ins and the public loaders
# ---------------------------------------------------------------------------------------

_TOY = {"n": 1000, "noise": 0.1, "seed": 0, "test_fraction": 0.2}

# name -> (builder, default options), in display order: 2-D classification, regression,
# then the larger classification sets.
_BUILTINS: dict[str, tuple[Callable[[_Options], Dataset], dict]] = {
    "moons": (_moons, dict(_TOY)),
    "circles": (_circles, {**_TOY, "noise": 0.05, "factor": 0.5}),
    "spirals": (_spirals, {**_TOY, "noise": 0.05, "arms": 2, "turns": 1.5}),
    "xor": (_xor, {**_TOY, "noise": 0.3, "style": "blobs"}),
    "gaussians": (_gaussians, {**_TOY, "noise": 0.5, "n_classes": 3}),
    "wave": (
        _wave,
        {"n": 500, "frequencies": [1, 4, 10], "amplitudes": [1.0, 1.0, 1.0],
         "spacing": "random", "noise": 0.0, "seed": 0, "test_fraction": 0.2},
    ),
    "circle": (
        _circle,
        {"n": 256, "frequencies": [1, 3, 6], "amplitudes": [1.0, 0.5, 0.25],
         "spacing": "even", "noise": 0.0, "seed": 0, "test_fraction": 0.2},
    ),
    "teacher": (
        _teacher,
        {"n": 1000, "d": 10, "width": 32, "outputs": 1, "activation": "tanh",
         "noise": 0.0, "teacher_seed": 0, "seed": 0, "test_fraction": 0.2},
    ),
    "modular": (_modular, {"p": 23, "train_fraction": 0.5, "seed": 0}),
    "digits": (_digits, {"seed": 0, "test_fraction": 0.2}),
    "mnist1d": (_mnist1d, {"num_samples": 5000, "seed": 42, "test_fraction": 0.2}),
}


def names() -> list[str]:
    """The built-in dataset names, in display order."""
    return list(_BUILTINS)


def _builtin(name) -> tuple[str, Callable[[_Options], Dataset], dict]:
    """Look a built-in up by name (case and surrounding spaces ignored)."""
    key = name.strip().lower() if isinstance(name, str) else ""
    if key not in _BUILTINS:
        close = difflib.get_close_matches(key, names(), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"Unknown dataset {name!r}.{hint} Choose one of: {', '.join(names())}.")
    builder, defaults = _BUILTINS[key]
    return key, builder, defaults


def options(name: str) -> dict[str, object]:
    """The default options of built-in `name`, a fresh copy safe to edit (e.g. for a settings form).

    Raises:
        ValueError: if `name` is not a built-in.
    """
    return copy.deepcopy(_builtin(name)[2])


def load(name: str, **opts) -> Dataset:
    """Generate built-in dataset `name`; options not given take their defaults (see `options`).

    Args:
        name: one of `names()`.
        **opts: options to override, e.g. `load("moons", noise=0.2, seed=3)`.

    Raises:
        ValueError: for an unknown name, an unknown option or a value out of range.
    """
    key, builder, defaults = _builtin(name)
    unknown = sorted(set(opts) - set(defaults))
    if unknown:
        raise ValueError(
            f"The {key} dataset has no option {', '.join(repr(u) for u in unknown)}. "
            f"Its options are: {', '.join(defaults)}."
        )
    return builder(_Options(key, {**copy.deepcopy(defaults), **opts}))


# ---------------------------------------------------------------------------------------
# User data: arrays, .npz and .csv files
# ---------------------------------------------------------------------------------------


def _numeric_array(values, what: str) -> np.ndarray:
    """`values` as a real numeric numpy array, or a ValueError that says what is wrong."""
    try:
        array = np.asarray(values)
    except ValueError:  # ragged nested lists
        raise ValueError(f"The {what} rows do not all have the same length.") from None
    if array.dtype == object:
        raise ValueError(f"The {what} contain something other than numbers; only numbers are accepted.")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"The {what} must be numbers, but they are of type {array.dtype}.")
    if array.ndim == 0 or array.size == 0:
        raise ValueError(f"The {what} are empty.")
    if not np.isfinite(array).all():
        raise ValueError(
            f"The {what} contain missing or infinite values (NaN or inf); remove or fill them first."
        )
    return array


def _features(x, what: str) -> np.ndarray:
    """Features as (N, ...) float: a 1-D array is read as one feature per sample."""
    x = _numeric_array(x, what)
    return x.reshape(-1, 1) if x.ndim == 1 else x


def _targets(y, what: str) -> np.ndarray:
    """Targets as (N,) or (N, O); a single column (N, 1) is kept as is."""
    y = _numeric_array(y, what)
    if y.ndim > 2:
        raise ValueError(
            f"The {what} have {y.ndim} dimensions; give one label or value per sample "
            f"(shape N) or one row of values per sample (shape N x outputs)."
        )
    return y


def _is_whole(y: np.ndarray) -> bool:
    return y.dtype.kind in "biu" or bool(np.all(y == np.round(y)))


def _infer_task(y: np.ndarray) -> str:
    """Classification for one column of whole numbers with few distinct values, else regression.

    "Few" means at most MAX_INFERRED_CLASSES distinct values and, on average, at least two
    samples per value; pass `task` explicitly to override.
    """
    if y.ndim == 2 and y.shape[1] != 1:
        return REGRESSION
    if not _is_whole(y):
        return REGRESSION
    distinct = len(np.unique(y))
    if 2 <= distinct <= MAX_INFERRED_CLASSES and distinct <= len(y) / 2:
        return CLASSIFICATION
    return REGRESSION


def _encode_labels(y: np.ndarray) -> tuple[np.ndarray, int]:
    """Check classification labels and map their distinct values to 0..C-1, in sorted order."""
    if y.ndim == 2:
        if y.shape[1] != 1:
            raise ValueError(
                f"Classification needs one label per sample, but each sample has {y.shape[1]} "
                f"target values; choose the regression task instead."
            )
        y = y[:, 0]
    if not _is_whole(y):
        raise ValueError("Classification labels must be whole numbers (like 0, 1, 2); some are not.")
    values, codes = np.unique(y, return_inverse=True)
    if len(values) < 2:
        raise ValueError(
            "Classification needs at least two different labels, but all samples have the same one."
        )
    if len(values) > MAX_CLASSES:
        raise ValueError(
            f"The labels take {len(values)} different values, more than the {MAX_CLASSES} "
            f"classes allowed; if the target is a quantity, choose the regression task."
        )
    return codes.reshape(-1), len(values)


def _check_task(task) -> None:
    if task is not None and task not in TASKS:
        raise ValueError(f"The task must be 'classification' or 'regression', not {task!r}.")


def _user_dataset(name, x_train, y_train, x_test, y_test, task, options) -> Dataset:
    """Check a user's train/test arrays against each other and build the Dataset.

    The task is inferred from all labels together, and labels are encoded jointly, so a
    class seen only in the test set still gets its own index.
    """
    for x, y, split in ((x_train, y_train, "training"), (x_test, y_test, "test")):
        if len(x) != len(y):
            raise ValueError(
                f"The {split} inputs have {len(x)} samples but the {split} targets have {len(y)}; "
                f"they must have one target per input."
            )
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"Training samples have shape {x_train.shape[1:]} but test samples have shape "
            f"{x_test.shape[1:]}; they must match."
        )
    if y_train.shape[1:] != y_test.shape[1:]:
        raise ValueError("The training and test targets have different numbers of columns; they must match.")
    if len(x_train) + len(x_test) < MIN_USER_SAMPLES:
        raise ValueError(
            f"The data has only {len(x_train) + len(x_test)} samples; at least {MIN_USER_SAMPLES} are needed."
        )
    _check_task(task)
    y_all = np.concatenate([y_train, y_test])
    task = task or _infer_task(y_all)
    n_classes = 0
    if task == CLASSIFICATION:
        y_all, n_classes = _encode_labels(y_all)
    y_train, y_test = y_all[: len(y_train)], y_all[len(y_train):]
    options = {**options, "task": task}
    return _make_dataset(name, x_train, y_train, x_test, y_test, task, n_classes, x_train.shape[1:], options)


def from_arrays(x, y, *, task=None, test_fraction=0.2, seed=0, name="custom") -> Dataset:
    """A Dataset from the user's own arrays, split at random into train and test.

    Args:
        x: inputs, shape (N,) for one feature, (N, D), or (N, ...) like images; more than
            two dimensions are flattened and the per-sample shape kept as input_shape.
        y: targets, shape (N,) or (N, O).
        task: "classification", "regression" or None to infer it: one column of whole
            numbers with few distinct values is classification. Class labels are
            remapped to 0..C-1 in sorted order.
        test_fraction: the share of samples held out for testing, strictly between 0 and 1.
        seed: fixes the random split.
        name: the display name.

    Raises:
        ValueError: for non-numeric, NaN/inf or empty arrays, mismatched lengths, too few
            samples, unusable labels or bad settings.
    """
    x = _features(x, "inputs")
    y = _targets(y, "targets")
    if len(x) != len(y):
        raise ValueError(
            f"There are {len(x)} inputs but {len(y)} targets; there must be one target per input."
        )
    if not (isinstance(test_fraction, numbers.Real) and 0.0 < test_fraction < 1.0):
        raise ValueError(
            f"The test fraction must be a number strictly between 0 and 1, not {test_fraction!r}."
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"The seed must be a non-negative whole number, not {seed!r}.")
    if len(x) < MIN_USER_SAMPLES:
        raise ValueError(f"The data has only {len(x)} samples; at least {MIN_USER_SAMPLES} are needed.")
    train, test = _split_indices(len(x), float(test_fraction), np.random.default_rng(int(seed)))
    options = {"test_fraction": float(test_fraction), "seed": int(seed)}
    return _user_dataset(name, x[train], y[train], x[test], y[test], task, options)


def _file_name(file, default: str) -> str:
    """A display name for a path or an upload (Streamlit uploads carry `.name`)."""
    if isinstance(file, (str, os.PathLike)):
        return Path(file).stem or default
    name = getattr(file, "name", None)
    return Path(name).stem if isinstance(name, str) and Path(name).stem else default


def _binary_source(file):
    """A path or a binary file-like for np.load; raw bytes are wrapped in a BytesIO."""
    if isinstance(file, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(file))
    return file


_SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
_WHOLE_KEYS = ("x", "y")


def from_npz(file) -> Dataset:
    """A Dataset from a NumPy .npz archive (a path, raw bytes or a binary file-like upload).

    The archive holds either x_train, y_train, x_test and y_test (a fixed split) or x and y
    (split at random by `from_arrays`), plus optionally "task" as a string. Pickled Python
    objects are never loaded (allow_pickle=False): an object array is refused unread.

    Raises:
        ValueError: if the file is not an .npz archive or has the wrong keys or arrays.
    """
    name = _file_name(file, "npz")
    try:
        archive = np.load(_binary_source(file), allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"There is no file at {file}.") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        raise ValueError(
            "The file could not be read as a NumPy .npz archive; save it with numpy.savez."
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError("The file holds a single array (.npy), but an .npz archive with x and y is needed.")
    with archive:
        keys = set(archive.files)
        arrays = {key: _read_npz_array(archive, key) for key in keys}
    data_keys = keys - {"task"}
    if data_keys not in (set(_SPLIT_KEYS), set(_WHOLE_KEYS)):
        raise ValueError(
            f"The archive has the arrays {', '.join(sorted(keys)) or 'none'}; it needs either "
            f"x_train, y_train, x_test and y_test, or x and y (and optionally task)."
        )
    task = _npz_task(arrays.get("task"))
    if data_keys == set(_WHOLE_KEYS):
        return from_arrays(arrays["x"], arrays["y"], task=task, name=name)
    x_train = _features(arrays["x_train"], "training inputs")
    y_train = _targets(arrays["y_train"], "training targets")
    x_test = _features(arrays["x_test"], "test inputs")
    y_test = _targets(arrays["y_test"], "test targets")
    return _user_dataset(name, x_train, y_train, x_test, y_test, task, {})


def _read_npz_array(archive, key: str) -> np.ndarray:
    """One array from an open archive; with allow_pickle=False numpy refuses object arrays."""
    try:
        return archive[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile):
        raise ValueError(
            f"The array {key!r} in the archive holds Python objects or is damaged; "
            f"only plain numeric arrays are accepted, so it was not loaded."
        ) from None


def _npz_task(value) -> str | None:
    """The optional "task" entry of an archive, as a string, or None when absent."""
    if value is None:
        return None
    if value.dtype.kind != "U" or value.size != 1:
        raise ValueError("The archive's 'task' must be the text 'classification' or 'regression'.")
    task = str(value.reshape(()))
    _check_task(task)
    return task


def _read_text(file) -> str:
    """The whole text of a path, bytes, or a text or binary file-like, as UTF-8."""
    try:
        if isinstance(file, (str, os.PathLike)):
            content = Path(file).read_bytes()
        elif isinstance(file, (bytes, bytearray, memoryview)):
            content = bytes(file)
        else:
            content = file.read()
    except OSError as error:
        raise ValueError(f"The file could not be read ({error.strerror or error}).") from None
    if isinstance(content, str):
        return content
    try:
        return content.decode("utf-8-sig")  # -sig drops the byte-order mark Excel writes
    except UnicodeDecodeError:
        raise ValueError("The file is not a text CSV file (it is not UTF-8 text).") from None


def _csv_rows(text: str) -> list[list[str]]:
    """Split CSV text into rows of stripped cells, guessing the delimiter (comma, semicolon, tab)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("The CSV file is empty.")
    try:
        dialect = csv.Sniffer().sniff("\n".join(lines[:20]), delimiters=",;\t")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    return [[cell.strip() for cell in row] for row in csv.reader(lines, delimiter=delimiter)]


def _is_text(cell: str) -> bool:
    """True for a cell that holds something other than a number (a column name, say)."""
    try:
        float(cell)
    except ValueError:
        return cell != ""
    return False


def _parse_number(cell: str, row: int, column: int) -> float:
    if cell == "":
        raise ValueError(
            f"Row {row}, column {column} of the CSV file is empty; fill in or remove missing values."
        )
    try:
        return float(cell)
    except ValueError:
        raise ValueError(
            f"Row {row}, column {column} of the CSV file holds {cell!r}, which is not a number; "
            f"only numeric columns are accepted."
        ) from None


def _target_column(target, header: list[str] | None, n_columns: int) -> int:
    """The index of the target column, given as an index (negative counts from the end) or a header name."""
    if isinstance(target, str):
        if header is None:
            raise ValueError(
                f"The target column {target!r} is given by name, but the CSV file has no header row."
            )
        if target not in header:
            raise ValueError(f"There is no column named {target!r}. The columns are: {', '.join(header)}.")
        return header.index(target)
    is_index = isinstance(target, numbers.Integral) and not isinstance(target, bool)
    if not is_index or not -n_columns <= target < n_columns:
        raise ValueError(
            f"The target column must be a column name or a number from {-n_columns} to {n_columns - 1}; "
            f"got {target!r}."
        )
    return int(target) % n_columns


def from_csv(file, target=-1, has_header=None) -> Dataset:
    """A Dataset from a CSV file of numbers: one column is the target, the rest are features.

    Args:
        file: a path, raw bytes, or a text or binary file-like (a Streamlit upload).
        target: the target column, by index (default: the last) or by header name.
        has_header: whether the first row holds column names; None guesses: it is a header
            when any of its cells holds text that is not a number.

    The delimiter (comma, semicolon or tab) is guessed. The task is inferred as in
    `from_arrays`, and the data split at random with its defaults.

    Raises:
        ValueError: for an empty file, ragged rows, non-numeric or missing cells, or a
            target column that does not exist.
    """
    name = _file_name(file, "csv")
    rows = _csv_rows(_read_text(file))
    if has_header is None:
        has_header = any(_is_text(cell) for cell in rows[0])
    header = rows[0] if has_header else None
    body = rows[1:] if has_header else rows
    if not body:
        raise ValueError("The CSV file has a header row but no data rows.")
    n_columns = len(rows[0])
    if n_columns < 2:
        raise ValueError(
            "The CSV file has only one column; it needs at least one feature column and a target column."
        )
    first_line = 2 if has_header else 1
    for line, row in enumerate(body, start=first_line):
        if len(row) != n_columns:
            raise ValueError(
                f"Row {line} of the CSV file has {len(row)} values, but the first row has {n_columns}; "
                f"every row needs the same number of columns."
            )
    table = np.array(
        [[_parse_number(cell, line, column + 1) for column, cell in enumerate(row)]
         for line, row in enumerate(body, start=first_line)]
    )
    column = _target_column(target, header, n_columns)
    features = np.delete(table, column, axis=1)
    return from_arrays(features, table[:, column], name=name)
