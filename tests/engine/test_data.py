"""Tests for engine.data: the built-in datasets, the user-file loaders and their refusals."""
import io
import json

import numpy as np
import pytest
import torch

from engine import data

# Options that make each built-in small and quick; mnist1d generation is the slow one.
SMALL = {
    "moons": {"n": 100},
    "circles": {"n": 100},
    "spirals": {"n": 100},
    "xor": {"n": 100},
    "gaussians": {"n": 100},
    "wave": {"n": 100},
    "circle": {"n": 100},
    "teacher": {"n": 100},
    "modular": {"p": 7},
    "digits": {},
    "mnist1d": {"num_samples": 200},
}


def assert_same(a: data.Dataset, b: data.Dataset):
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


# --- every built-in ---------------------------------------------------------------------


def test_small_options_cover_every_builtin():
    assert set(SMALL) == set(data.names())


@pytest.mark.parametrize("name", data.names())
def test_builtin_shapes_and_dtypes(name):
    ds = data.load(name)
    assert ds.x_train.dtype == ds.x_test.dtype == torch.float32
    assert ds.x_train.ndim == 2 and ds.x_train.shape[1] == ds.n_features == int(np.prod(ds.input_shape))
    if ds.task == "classification":
        assert ds.y_train.dtype == torch.int64 and ds.y_train.shape == (len(ds.x_train),)
        assert int(ds.y_train.max()) < ds.n_classes == ds.n_outputs
    else:
        assert ds.y_train.dtype == torch.float32 and ds.y_train.shape == (len(ds.x_train), ds.n_outputs)
        assert ds.n_classes == 0 and ds.target_fn is not None


@pytest.mark.parametrize("name", data.names())
def test_builtin_options_are_json_and_rebuild_it(name):
    ds = data.load(name, **SMALL[name])
    assert_same(data.load(name, **json.loads(json.dumps(ds.options))), ds)


@pytest.mark.parametrize("name", data.names())
def test_same_seed_gives_identical_data(name):
    assert_same(data.load(name, **SMALL[name], seed=3), data.load(name, **SMALL[name], seed=3))


@pytest.mark.parametrize("name", data.names())
def test_different_seeds_give_different_data(name):
    a, b = data.load(name, **SMALL[name], seed=1), data.load(name, **SMALL[name], seed=2)
    assert not torch.equal(a.x_train, b.x_train)


@pytest.mark.parametrize("name", data.names())
def test_options_returns_the_defaults_of_each_builtin(name):
    defaults = data.options(name)
    defaults["seed"] = -1  # editing the copy must not change the registry
    assert data.options(name)["seed"] >= 0


@pytest.mark.parametrize("name", data.names())
def test_bounds_span_the_training_inputs(name):
    ds = data.load(name, **SMALL[name])
    assert ds.bounds == (float(ds.x_train.min()), float(ds.x_train.max()))


def test_names_start_with_the_2d_toys():
    assert data.names()[:5] == ["moons", "circles", "spirals", "xor", "gaussians"]


def test_describe_is_one_line():
    assert data.load("moons").describe() == "moons: 800 train / 200 test, 2 features, 2 classes"


def test_to_moves_a_copy():
    ds = data.load("moons", n=100)
    moved = ds.to("cpu")
    assert moved is not ds and torch.equal(moved.x_train, ds.x_train)


def test_loading_mnist1d_leaves_global_random_state_alone():
    np.random.seed(5)
    expected = np.random.rand()
    np.random.seed(5)
    data.load("mnist1d", num_samples=300, seed=7)
    assert np.random.rand() == expected


# --- what each built-in contains --------------------------------------------------------


@pytest.mark.parametrize("test_fraction", [0.1, 0.5])
def test_split_sizes_follow_test_fraction(test_fraction):
    ds = data.load("moons", n=200, test_fraction=test_fraction)
    assert len(ds.x_test) == round(200 * test_fraction) and len(ds.x_train) + len(ds.x_test) == 200


def test_toy_inputs_are_standardized():
    x = data.load("moons").x_train
    assert x.mean(0).abs().max() < 1e-5 and abs(x.var(0).mean() - 1) < 0.01


def test_spirals_have_one_class_per_arm():
    assert data.load("spirals", arms=4).n_classes == 4


def test_xor_labels_are_opposite_signs_without_noise():
    ds = data.load("xor", style="uniform", noise=0.0)
    x, y = ds.x_train, ds.y_train
    # standardizing shifts the centre a little, so look only at points away from the axes
    far = (x.abs() > 0.2).all(1)
    assert torch.equal(y[far], (x[far, 0] * x[far, 1] < 0).long())


def test_gaussians_has_the_asked_number_of_classes():
    assert data.load("gaussians", n_classes=5).n_classes == 5


def test_digits_pixels_lie_in_unit_interval():
    ds = data.load("digits")
    assert ds.x_train.min() >= 0 and ds.x_train.max() <= 1 and ds.x_train.max() == 1


def test_circle_points_have_norm_one():
    norms = data.load("circle").x_train.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)


def test_wave_inputs_lie_in_minus_one_to_one():
    x = data.load("wave").x_train
    assert x.min() >= -1 and x.max() <= 1


def test_teacher_seed_fixes_the_teacher_not_the_inputs():
    a, b = data.load("teacher", teacher_seed=1, seed=1), data.load("teacher", teacher_seed=1, seed=2)
    probe = np.random.default_rng(0).normal(size=(5, 10))
    assert np.array_equal(a.target_fn(probe), b.target_fn(probe))


def test_teacher_noise_differs_between_outputs():
    ds = data.load("teacher", outputs=2, noise=0.1)
    residual = ds.y_train.numpy() - ds.target_fn(ds.x_train.numpy())
    assert not np.allclose(residual[:, 0], residual[:, 1])


def test_teacher_has_the_asked_inputs_and_outputs():
    ds = data.load("teacher", d=3, outputs=2, activation="relu")
    assert ds.x_train.shape[1] == 3 and ds.n_outputs == 2


@pytest.mark.parametrize("name", ["wave", "circle", "teacher"])
def test_target_fn_reproduces_noiseless_targets(name):
    ds = data.load(name, noise=0.0)
    assert np.allclose(ds.target_fn(ds.x_train.numpy()), ds.y_train.numpy(), atol=1e-6)


@pytest.mark.parametrize("name", ["wave", "circle", "teacher"])
def test_noise_moves_targets_off_target_fn(name):
    ds = data.load(name, noise=0.1)
    assert not np.allclose(ds.target_fn(ds.x_train.numpy()), ds.y_train.numpy(), atol=1e-3)


def test_modular_inputs_are_one_hot_pairs_labelled_by_the_sum():
    p = 7
    ds = data.load("modular", p=p)
    x, y = ds.x_train, ds.y_train
    ones = torch.ones(len(x))
    assert torch.equal(x[:, :p].sum(1), ones) and torch.equal(x[:, p:].sum(1), ones)
    a, b = x[:, :p].argmax(1), x[:, p:].argmax(1)
    assert torch.equal(y, (a + b) % p)


def test_modular_splits_are_disjoint_and_cover_all_pairs():
    p = 7
    ds = data.load("modular", p=p)
    pairs = {tuple(row.nonzero().flatten().tolist()) for row in torch.cat([ds.x_train, ds.x_test])}
    assert len(pairs) == len(ds.x_train) + len(ds.x_test) == p * p


def test_modular_train_size_follows_train_fraction():
    assert len(data.load("modular", p=10, train_fraction=0.3).x_train) == 30


def test_mnist1d_default_has_the_standard_size():
    ds = data.load("mnist1d")
    assert (len(ds.x_train), len(ds.x_test), ds.n_classes) == (4000, 1000, 10)


# --- bad options ------------------------------------------------------------------------


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match=r"Unknown dataset 'mons'\. Did you mean 'moons'\?.*moons, circles"):
        data.load("mons")


def test_options_of_unknown_name_is_refused():
    with pytest.raises(ValueError, match=r"Unknown dataset"):
        data.options("nope")


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match=r"no option 'nosie'\. Its options are: n, noise"):
        data.load("moons", nosie=0.1)


@pytest.mark.parametrize(
    "name, bad",
    [
        ("moons", {"n": 3}),
        ("moons", {"noise": -0.1}),
        ("moons", {"n": "many"}),
        ("moons", {"seed": 1.5}),
        ("circles", {"test_fraction": 1.0}),
        ("gaussians", {"n_classes": 1}),
        ("xor", {"style": "diamond"}),
        ("modular", {"p": 1}),
        ("modular", {"train_fraction": 0.0}),
        ("wave", {"frequencies": []}),
        ("circle", {"frequencies": [1.5], "amplitudes": [1.0]}),
        ("teacher", {"activation": "sigmoid"}),
        ("mnist1d", {"num_samples": 10}),
    ],
)
def test_out_of_range_option_is_refused_with_a_sentence(name, bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=rf"^The {name} option '{key}' must be .*; got .*\.$"):
        data.load(name, **bad)


def test_unpaired_frequencies_and_amplitudes_are_refused():
    with pytest.raises(ValueError, match=r"must have the same length; got 2 and 1\."):
        data.load("wave", frequencies=[1, 2], amplitudes=[1.0])


# --- user arrays ------------------------------------------------------------------------

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 3))
LABELS = RNG.integers(0, 3, 40) * 10 + 5  # three classes, valued 5, 15, 25


def test_from_arrays_infers_classification_and_remaps_labels():
    ds = data.from_arrays(X, LABELS)
    assert ds.task == "classification" and ds.n_classes == 3
    assert set(torch.cat([ds.y_train, ds.y_test]).tolist()) == {0, 1, 2}


def test_from_arrays_infers_regression_for_real_targets():
    ds = data.from_arrays(X, X.sum(1))
    assert ds.task == "regression" and ds.y_train.shape == (len(ds.x_train), 1)


def test_from_arrays_honours_an_explicit_task():
    assert data.from_arrays(X, LABELS, task="regression").task == "regression"


def test_from_arrays_flattens_images_and_keeps_their_shape():
    ds = data.from_arrays(RNG.random((40, 1, 4, 4)), LABELS)
    assert ds.input_shape == (1, 4, 4) and ds.n_features == 16


def test_from_arrays_split_follows_test_fraction():
    assert len(data.from_arrays(X, LABELS, test_fraction=0.25).x_test) == 10


@pytest.mark.parametrize(
    "x, y, kwargs, message",
    [
        (X, LABELS[:30], {}, r"40 inputs but 30 targets"),
        (X.astype(str), LABELS, {}, r"inputs must be numbers"),
        (np.where(X > 2, np.nan, X), LABELS, {}, r"missing or infinite values"),
        (np.empty((0, 3)), np.empty(0), {}, r"are empty"),
        (X[:5], LABELS[:5], {}, r"only 5 samples; at least 10 are needed"),
        (X, RNG.random((40, 2, 2)), {}, r"targets have 3 dimensions"),
        (X, X.sum(1), {"task": "classification"}, r"labels must be whole numbers"),
        (X, np.zeros(40), {"task": "classification"}, r"at least two different labels"),
        (RNG.normal(size=(400, 2)), np.arange(400), {"task": "classification"}, r"400 different values"),
        (X, LABELS, {"task": "clustering"}, r"task must be 'classification' or 'regression'"),
        (X, LABELS, {"test_fraction": 1.5}, r"test fraction must be a number strictly between 0 and 1"),
        ([[1, 2], [3]] * 20, np.zeros(40), {}, r"rows do not all have the same length"),
    ],
)
def test_bad_arrays_are_refused_with_a_sentence(x, y, kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.from_arrays(x, y, **kwargs)


# --- .npz files -------------------------------------------------------------------------


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_npz_round_trip_from_a_path(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=X[:30], y_train=LABELS[:30], x_test=X[30:], y_test=LABELS[30:])
    ds = data.from_npz(path)
    assert ds.name == "mine" and np.allclose(ds.x_test.numpy(), X[30:]) and len(ds.x_train) == 30


def test_npz_round_trip_from_bytes():
    ds = data.from_npz(io.BytesIO(npz_bytes(x=X, y=LABELS)))
    assert ds.task == "classification" and len(ds.x_train) + len(ds.x_test) == 40


def test_npz_task_entry_is_honoured():
    assert data.from_npz(npz_bytes(x=X, y=LABELS, task="regression")).task == "regression"


UNPICKLED = []


def record_unpickling():
    UNPICKLED.append(True)


class Trap:
    """An object whose unpickling would call record_unpickling."""

    def __reduce__(self):
        return (record_unpickling, ())


def test_npz_with_object_array_is_refused_without_unpickling():
    content = npz_bytes(x=np.array([Trap()] * 40, dtype=object), y=LABELS)
    with pytest.raises(ValueError, match=r"holds Python objects .* so it was not loaded\."):
        data.from_npz(content)
    assert UNPICKLED == []


@pytest.mark.parametrize(
    "content, message",
    [
        (npz_bytes(inputs=X, labels=LABELS), r"needs either x_train, y_train, x_test and y_test, or x and y"),
        (npz_bytes(x=X, y=LABELS, x_test=X), r"it needs either"),
        (npz_bytes(x=X, y=LABELS, task="magic"), r"task must be 'classification' or 'regression'"),
        (npz_bytes(x_train=X, y_train=LABELS, x_test=X[:, :2], y_test=LABELS), r"must match"),
        (b"not an archive at all", r"could not be read as a NumPy \.npz archive"),
        (b"", r"could not be read as a NumPy \.npz archive"),
    ],
)
def test_bad_npz_is_refused_with_a_sentence(content, message):
    with pytest.raises(ValueError, match=message):
        data.from_npz(io.BytesIO(content))


def test_single_npy_array_is_refused(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, X)
    with pytest.raises(ValueError, match=r"single array \(\.npy\)"):
        data.from_npz(path)


def test_missing_npz_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match=r"There is no file at"):
        data.from_npz(tmp_path / "absent.npz")


# --- .csv files -------------------------------------------------------------------------


def csv_text(header: bool = True, delimiter: str = ",") -> str:
    lines = [delimiter.join(["a", "b", "c", "label"])] if header else []
    lines += [delimiter.join([f"{v:.6f}" for v in row] + [str(label)]) for row, label in zip(X, LABELS)]
    return "\n".join(lines) + "\n"


def test_csv_round_trip_from_a_path_with_header(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text(csv_text())
    ds = data.from_csv(path)
    assert ds.name == "table" and ds.n_features == 3 and ds.task == "classification" and ds.n_classes == 3


def test_csv_round_trip_from_bytes_without_header():
    ds = data.from_csv(io.BytesIO(csv_text(header=False).encode()))
    assert ds.n_features == 3 and len(ds.x_train) + len(ds.x_test) == 40


def test_csv_target_by_name_and_semicolons():
    ds = data.from_csv(io.StringIO(csv_text(delimiter=";")), target="a")
    assert ds.task == "regression" and ds.n_features == 3


def test_csv_keeps_feature_values():
    ds = data.from_csv(io.StringIO(csv_text()), has_header=True)
    features = torch.cat([ds.x_train, ds.x_test]).numpy()
    assert np.allclose(np.sort(features[:, 0]), np.sort(X[:, 0]), atol=1e-6)


@pytest.mark.parametrize(
    "text, kwargs, message",
    [
        ("", {}, r"CSV file is empty"),
        ("a,b\n", {}, r"header row but no data rows"),
        ("1,2\n3\n" * 10, {}, r"Row 2 of the CSV file has 1 values, but the first row has 2"),
        ("1,x\n" * 10, {"has_header": False}, r"Row 1, column 2 .* holds 'x', which is not a number"),
        ("1,\n" * 10, {}, r"Row 1, column 2 of the CSV file is empty"),
        ("1,nan\n" * 10, {}, r"missing or infinite values"),
        ("1\n2\n" * 10, {}, r"only one column"),
        ("a,b\n" + "1,2\n" * 10, {"target": "c"}, r"no column named 'c'\. The columns are: a, b\."),
        ("1,2\n" * 10, {"target": "b"}, r"no header row"),
        ("1,2\n" * 10, {"target": 5}, r"target column must be a column name or a number from -2 to 1"),
    ],
)
def test_bad_csv_is_refused_with_a_sentence(text, kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.from_csv(io.StringIO(text), **kwargs)


def test_binary_garbage_csv_is_refused():
    with pytest.raises(ValueError, match=r"not a text CSV file"):
        data.from_csv(b"\xff\xfe\x00\x81")
