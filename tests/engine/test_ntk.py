"""The empirical NTK against kernels built from explicit per-sample Jacobians, and the
routines that read it against plain numpy (or scipy) formulas."""
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn
from torch.func import functional_call

from engine import data as datasets
from engine.models import PARAMETRIZATIONS, Centered, ModelSpec, build
from engine.ntk import (
    KINDS,
    eigen,
    eigenfunction_map,
    eigenfunctions,
    eigenvector_rotation,
    empirical_ntk,
    extreme_indices,
    extreme_samples,
    fourier_content,
    kernel_over_checkpoints,
    kernel_regression,
    layer_kernels,
    mode_curves,
    mode_learning_curves,
    nystrom,
    project_residual,
    residuals_over_checkpoints,
    target_power,
    target_power_over_training,
)
from engine.results import Eigenfunctions
from engine.train import TrainConfig, Trainer

N_IN, N_OUT = 3, 3


def tiny_model(parametrization="standard", bias=True, activation="tanh", alpha=None, seed=0):
    spec = ModelSpec(width=6, depth=2, activation=activation, bias=bias,
                     parametrization=parametrization, alpha=alpha, seed=seed)
    return build(spec, (N_IN,), N_OUT).double()


def inputs(n, seed=0):
    return torch.randn(n, N_IN, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def explicit_jacobians(model, x):
    """(N, O, P): each sample's Jacobian by torch.autograd.functional.jacobian."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def jacobian(sample):
        def f(*values):
            return functional_call(model, ({**buffers, **dict(zip(params, values))},), (sample[None],))[0]
        parts = torch.autograd.functional.jacobian(f, tuple(params.values()))
        return torch.cat([p.reshape(p.shape[0], -1) for p in parts], dim=1)

    return torch.stack([jacobian(sample) for sample in x])


def reference_kernel(J1, J2, kind):
    """Every kind from J J^T (the definitions in SCIENCE.md)."""
    n, o, m = J1.shape[0], J1.shape[1], J2.shape[0]
    full = torch.einsum("naP,mbP->namb", J1, J2)
    if kind == "full":
        return full.reshape(n * o, m * o)
    if kind == "trace":
        return torch.einsum("nama->nm", full)
    if kind == "diagonal":
        return torch.einsum("nama->nma", full)
    g1, g2 = J1.sum(1) / math.sqrt(o), J2.sum(1) / math.sqrt(o)  # gradients of sum_a f_a / sqrt(O)
    return g1 @ g2.T


def relative_error(a, b):
    return float((torch.as_tensor(a) - torch.as_tensor(b)).norm() / torch.as_tensor(b).norm())


# ---------------------------------------------------------------- the kernel itself


@pytest.mark.parametrize("method", ["structured", "contraction"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_equals_explicit_jacobian_products(kind, method):
    model, x1, x2 = tiny_model(), inputs(5), inputs(4, seed=1)
    expected = reference_kernel(explicit_jacobians(model, x1), explicit_jacobians(model, x2), kind)
    assert relative_error(empirical_ntk(model, x1, x2, kind=kind, method=method), expected) < 1e-6


@pytest.mark.parametrize("method", ["structured", "contraction"])
def test_symmetric_kernel_from_blocks_equals_explicit_products(method):
    model, x = tiny_model(), inputs(7)
    expected = reference_kernel(explicit_jacobians(model, x), explicit_jacobians(model, x), "full")
    assert relative_error(empirical_ntk(model, x, kind="full", method=method, chunk=3), expected) < 1e-6


@pytest.mark.parametrize("method", ["structured", "contraction"])
def test_layerwise_parts_sum_to_the_total(method):
    model, x = tiny_model(), inputs(5)
    total, layers = empirical_ntk(model, x, kind="diagonal", layerwise=True, method=method)
    assert sorted(layers) == ["layers.fc1", "layers.fc2", "layers.out"]
    assert relative_error(sum(layers.values()), empirical_ntk(model, x, kind="diagonal")) < 1e-12
    assert relative_error(total, sum(layers.values())) == 0


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_structured_equals_contraction(parametrization, bias):
    model = tiny_model(parametrization, bias, activation="relu")
    with torch.no_grad():  # nonzero biases, so that they matter
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_()
    x = inputs(6)
    structured = empirical_ntk(model, x, kind="full", method="structured")
    assert relative_error(structured, empirical_ntk(model, x, kind="full", method="contraction")) < 1e-6


def test_centered_model_structured_equals_contraction_and_alpha_squared_inner():
    inner = tiny_model()
    model, x = Centered(inner, alpha=3.0), inputs(5)
    structured = empirical_ntk(model, x, kind="full", method="structured")
    assert relative_error(structured, empirical_ntk(model, x, kind="full", method="contraction")) < 1e-6
    assert relative_error(structured, 9.0 * empirical_ntk(inner, x, kind="full")) < 1e-12


@pytest.mark.parametrize("kind", ["full", "trace", "diagonal"])
def test_blocks_summed_in_place_over_chunks_equal_the_contraction(kind):
    """The structured blocks are scaled and summed in place: over several chunks (kept
    column features reused) and with an output scale alpha, the kernel is still alpha^2 times
    the explicit products of the inner model's Jacobians."""
    inner, x = tiny_model(), inputs(7)
    J = explicit_jacobians(inner, x)
    structured = empirical_ntk(Centered(inner, alpha=3.0), x, kind=kind, method="structured", chunk=3)
    assert relative_error(structured, 9.0 * reference_kernel(J, J, kind)) < 1e-6


def test_pseudo_is_the_block_sum_over_o():
    """pNTK = (1/O) sum_ab Theta_ab: O times the mean of each O x O block of the full kernel."""
    model, x = tiny_model(), inputs(5)
    blocks = empirical_ntk(model, x, kind="full").reshape(5, N_OUT, 5, N_OUT)
    expected = N_OUT * blocks.mean(dim=(1, 3))
    assert relative_error(empirical_ntk(model, x, kind="pseudo"), expected) < 1e-12


@pytest.mark.parametrize("method", ["structured", "contraction"])
def test_one_column_pseudo_equals_the_block_sums_of_all_o_columns_layer_by_layer(method):
    """The one summed backward column gives each layer's kernel that the O columns' blocks summed did."""
    model, x1, x2 = Centered(tiny_model(), alpha=2.0), inputs(5), inputs(4, seed=1)
    _, pseudo = empirical_ntk(model, x1, x2, kind="pseudo", layerwise=True, method=method, chunk=2)
    _, full = empirical_ntk(model, x1, x2, kind="full", layerwise=True, method=method)
    for name, K in full.items():
        block_sums = K.reshape(5, N_OUT, 4, N_OUT).sum(dim=(1, 3)) / N_OUT
        assert relative_error(pseudo[name], block_sums) < 1e-12


@pytest.mark.parametrize("method", ["structured", "contraction"])
def test_rates_weigh_each_parameters_jacobian_columns(method):
    """Theta = J diag(c) J^T with c the rate of the parameter each column belongs to."""
    model, x1, x2 = tiny_model(), inputs(5), inputs(4, seed=1)
    rates = {name: 0.5 + i for i, (name, _) in enumerate(model.named_parameters())}
    c = torch.cat([torch.full((p.numel(),), rates[n], dtype=torch.float64) for n, p in model.named_parameters()])
    J1, J2 = explicit_jacobians(model, x1), explicit_jacobians(model, x2)
    expected = torch.einsum("naP,P,mbP->namb", J1, c, J2).reshape(5 * N_OUT, 4 * N_OUT)
    got = empirical_ntk(model, x1, x2, kind="full", method=method, rates=rates)
    assert relative_error(got, expected) < 1e-12


@pytest.mark.parametrize("rates, sentence", [({"nonsense": 1.0}, "does not train: nonsense"),
                                             ({"layers.out.bias": -1.0}, "at least 0")])
def test_bad_rates_get_a_sentence(rates, sentence):
    with pytest.raises(ValueError, match=sentence):
        empirical_ntk(tiny_model(), inputs(3), rates=rates)


@pytest.mark.parametrize("kind", ["full", "trace", "pseudo"])
def test_kernels_are_symmetric_positive_semidefinite(kind):
    K = empirical_ntk(tiny_model(activation="relu"), inputs(8), kind=kind)
    values = torch.linalg.eigvalsh(K)
    assert torch.equal(K, K.T) and values.min() >= -1e-10 * values.max()


def test_any_module_goes_through_the_contraction_with_its_buffers():
    model = nn.Sequential(nn.Linear(N_IN, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 2)).double()
    with torch.no_grad():
        model[1].running_mean.normal_()
    x = inputs(4)
    J = explicit_jacobians(model.eval(), x)
    model.train()
    assert relative_error(empirical_ntk(model, x, kind="trace"), reference_kernel(J, J, "trace")) < 1e-6
    assert model.training  # the mode is restored


def test_float64_on_request_matches_the_float64_model():
    model = build(ModelSpec(width=6, depth=2, activation="tanh"), (N_IN,), N_OUT)
    x = inputs(5).float()
    K = empirical_ntk(model, x, kind="trace", dtype=torch.float64)
    assert K.dtype == torch.float64 and next(model.parameters()).dtype == torch.float32
    assert relative_error(K, empirical_ntk(model.double(), x.double(), kind="trace")) < 1e-12


def test_too_large_a_kernel_is_refused_with_its_size():
    with pytest.raises(ValueError, match="needs about .* GB"):
        empirical_ntk(tiny_model(), inputs(50), kind="full", memory_limit=1e4)


def test_a_small_memory_limit_chunks_to_the_same_kernel():
    model, x = tiny_model(), inputs(40)
    chunked = empirical_ntk(model, x, kind="trace", method="contraction", memory_limit=2e5)
    assert relative_error(chunked, empirical_ntk(model, x, kind="trace")) < 1e-12


def test_a_residual_mlp_takes_the_hooked_structured_path_to_the_same_kernel():
    model = build(ModelSpec(kind="resmlp", width=4, depth=1), (N_IN,), 2).double()
    structured = empirical_ntk(model, inputs(5), kind="full", method="structured")
    assert relative_error(structured, empirical_ntk(model, inputs(5), kind="full", method="contraction")) < 1e-10


# ---------------------------------------------------------------- eigenvectors and eigenfunctions


def test_eigen_matches_numpy_eigh_and_keeps_numpy():
    A = np.random.default_rng(0).normal(size=(6, 6))
    K = A @ A.T
    values, vectors = eigen(K)
    assert isinstance(values, np.ndarray)
    np.testing.assert_allclose(values, np.linalg.eigvalsh(K)[::-1], rtol=1e-12)
    np.testing.assert_allclose(vectors @ np.diag(values) @ vectors.T, K, atol=1e-10)


def test_nystrom_reproduces_the_eigenvectors_at_the_training_points():
    model, x = tiny_model(), inputs(8)
    values, phi = eigenfunctions(model, x, x, k=4)
    _, vectors = eigen(empirical_ntk(model, x))
    assert relative_error(phi, vectors[:, :4]) < 1e-8


def test_nystrom_is_the_kernel_weighted_sum_over_eigenvalue():
    rng = np.random.default_rng(0)
    K_new, U, lam = rng.normal(size=(3, 5)), rng.normal(size=(5, 2)), np.array([2.0, 0.5])
    np.testing.assert_allclose(nystrom(K_new, U, lam), np.einsum("mj,ji->mi", K_new, U) / lam)


def test_eigenfunctions_on_a_plane_have_the_grid_shape():
    model = build(ModelSpec(width=8, depth=1), (2,), 1)
    ef = eigenfunction_map(model, torch.randn(20, 2), 3, np.linspace(-1, 1, 5), np.linspace(-1, 1, 4))
    assert ef.functions.shape == (3, 4, 5) and ef.values.shape == (3,)


def dominant_frequency_share(vector):
    """The frequency holding most of a vector's power on an even circle grid, and its share."""
    power = np.abs(np.fft.rfft(vector)) ** 2
    return int(power.argmax()), float(power.max() / power.sum())


def test_wide_relu_eigenvectors_on_the_circle_are_fourier_modes():
    n = 64
    angles = 2 * np.pi * np.arange(n) / n
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    model = build(ModelSpec(width=2048, depth=1, activation="relu"), (2,), 1)
    _, vectors = eigen(empirical_ntk(model, x, dtype=torch.float64).numpy())
    modes = [dominant_frequency_share(vectors[:, i]) for i in range(5)]
    frequencies = [f for f, _ in modes]
    assert all(share > 0.9 for _, share in modes), modes
    assert frequencies == sorted(frequencies) and frequencies[0] == 0, modes


# ---------------------------------------------------------------- fit to the task


def test_target_power_is_the_cumulative_share_of_the_target_norm():
    rng = np.random.default_rng(1)
    U, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    y = rng.normal(size=6)
    expected = np.cumsum((U.T @ y) ** 2) / (y @ y)
    np.testing.assert_allclose(target_power(U, y, k=4), expected[:4])
    assert target_power(U, y)[-1] == pytest.approx(1.0)


def test_class_labels_count_as_one_hot_targets():
    U, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(5, 5)))
    labels = np.array([0, 2, 1, 0, 2])
    np.testing.assert_allclose(target_power(U, labels), target_power(U, np.eye(3)[labels]))


def test_kernel_regression_matches_a_linear_solve():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(6, 6))
    K, K_test, y = A @ A.T, rng.normal(size=(2, 6)), rng.normal(size=6)
    expected = K_test @ np.linalg.solve(K + 0.1 * np.eye(6), y)
    np.testing.assert_allclose(kernel_regression(K, K_test, y, ridge=0.1), expected, rtol=1e-10)
    np.testing.assert_allclose(kernel_regression(K, K_test, y), K_test @ np.linalg.solve(K, y), rtol=1e-6)


# ---------------------------------------------------------------- spectral bias


def linear_run(lr, steps):
    """Full-batch GD with the lab's trainer on a linear model with two outputs (MSE)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 3)) * np.array([2.0, 1.0, 0.3])
    data = datasets.from_arrays(x, rng.normal(size=(40, 2)), task="regression", test_fraction=0.25)
    model = build(ModelSpec(depth=0, bias=False), (3,), 2)
    config = TrainConfig(optimizer="gd", lr=lr, steps=steps, loss="mse", checkpoint_every=1, eval_every=steps)
    trainer = Trainer(model, data, config, device="cpu")
    trainer.run()
    return model, trainer.checkpoints, data.x_train.double(), data.y_train.double()


@pytest.mark.parametrize("flow, lr, tolerance", [(False, 0.05, 1e-4), (True, 0.002, 2e-3)])
def test_mode_curves_match_a_linear_model_trained_by_gradient_descent(flow, lr, tolerance):
    """A linear model's kernel is fixed (X X^T per output), so the prediction is exact for
    gradient descent and close to it for gradient flow at a small learning rate."""
    model, checkpoints, x, y = linear_run(lr, steps=30)
    steps, residuals = residuals_over_checkpoints(model, checkpoints, x, y)
    values, vectors = eigen(x @ x.T)
    values, vectors = values[:3], vectors[:, :3]
    predicted = mode_learning_curves(values, vectors, -residuals[0].double(), lr, 30, len(x),
                                     outputs=2, flow=flow)
    actual = project_residual(residuals.double(), vectors)
    assert steps == list(range(31)) and relative_error(predicted, actual) < tolerance


def test_gradient_descent_decay_is_the_closed_form_power():
    curves = mode_learning_curves(np.array([4.0]), np.array([[1.0]]), np.array([2.0]), 0.1, 3, 1, flow=False)
    np.testing.assert_allclose(curves[:, 0], 2.0 * np.abs(1 - 2 * 0.1 * 4.0) ** np.arange(4))


def test_mode_curves_result_has_a_row_per_checkpoint():
    model, checkpoints, x, y = linear_run(0.05, steps=10)
    curves = mode_curves(model, checkpoints, x.float(), y.float(), 0.05, k=3, flow=False)
    assert curves.predicted.shape == curves.actual.shape == (11, 3)
    np.testing.assert_allclose(curves.predicted, curves.actual, rtol=1e-3, atol=1e-5)


# ---------------------------------------------------------------- over training


def test_kernel_over_checkpoints_sorts_steps_and_loads_each():
    model, x = tiny_model(), inputs(4)
    other = tiny_model(seed=1)
    steps, kernels = kernel_over_checkpoints(model, {5: other.state_dict(), 0: model.state_dict()}, x)
    assert steps == [0, 5]
    assert relative_error(kernels[1], empirical_ntk(other, x)) < 1e-12


def test_eigenvector_rotation_matches_scipy_subspace_angles():
    rng = np.random.default_rng(5)
    U0, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    U, _ = np.linalg.qr(U0[:, :3] + 0.3 * rng.normal(size=(8, 3)))
    expected = np.sort(scipy.linalg.subspace_angles(U0[:, :3], U))
    np.testing.assert_allclose(eigenvector_rotation(U0, U, 3), expected, atol=1e-7)


def test_a_rotation_within_the_subspace_has_zero_angles():
    U0, _ = np.linalg.qr(np.random.default_rng(6).normal(size=(6, 6)))
    rotation, _ = np.linalg.qr(np.random.default_rng(7).normal(size=(2, 2)))
    rotated = U0.copy()
    rotated[:, :2] = U0[:, :2] @ rotation
    np.testing.assert_allclose(eigenvector_rotation(U0, rotated, 2), 0.0, atol=1e-6)


# ---------------------------------------------------------------- extreme samples, Fourier content, layers


def reference_eigenvectors(K):
    """numpy's eigenvectors, largest eigenvalue first, each signed so its largest entry is positive."""
    values, vectors = np.linalg.eigh(np.asarray(K))
    values, vectors = values[::-1], vectors[:, ::-1]
    peak = np.abs(vectors).argmax(0)
    return values, vectors * np.sign(vectors[peak, np.arange(vectors.shape[1])])


def test_extreme_indices_are_the_two_ends_of_each_sorted_eigenvector():
    vectors = np.random.default_rng(8).normal(size=(9, 3))
    order = np.argsort(vectors, axis=0).T
    np.testing.assert_array_equal(extreme_indices(vectors, 2), np.concatenate([order[:, :2], order[:, -2:]], 1))


def test_extreme_samples_are_the_inputs_and_labels_at_the_eigenvector_ends():
    model = build(ModelSpec(width=6, depth=2, activation="tanh"), (1, 2, 3), 2).double()
    x, labels = inputs(10).repeat(1, 2), torch.arange(10) % 3
    J = explicit_jacobians(model, x)
    values, vectors = reference_eigenvectors(reference_kernel(J, J, "trace"))
    result = extreme_samples(model, x, k=3, per_side=2, labels=labels, input_shape=(1, 2, 3))
    rows = result.indices
    assert rows.shape == (3, 4) and result.inputs.shape == (3, 4, 1, 2, 3)
    np.testing.assert_allclose(result.values, values[:3], rtol=1e-8)
    np.testing.assert_allclose(result.entries, np.take_along_axis(vectors[:, :3].T, rows, 1), atol=1e-8)
    np.testing.assert_allclose(result.entries[:, 0], vectors[:, :3].min(0), atol=1e-8)
    np.testing.assert_allclose(result.entries[:, -1], vectors[:, :3].max(0), atol=1e-8)
    np.testing.assert_array_equal(result.inputs.reshape(3, 4, 6), x.numpy()[rows])
    np.testing.assert_array_equal(result.labels, labels.numpy()[rows])


def on_circle(functions_of_angle, n=64, values=None):
    """Eigenfunctions at n + 1 equal angles from -pi to pi (the last repeats the first)."""
    angle = np.linspace(-np.pi, np.pi, n + 1)
    functions = np.stack([f(angle) for f in functions_of_angle])
    return Eigenfunctions(np.ones(len(functions)) if values is None else values, functions, angle, x_label="angle")


def test_a_cosine_on_the_circle_has_all_its_power_at_its_frequency():
    content = fourier_content(on_circle([lambda t: np.cos(3 * t)]))
    np.testing.assert_allclose(content.power[0], np.eye(17)[3], atol=1e-12)
    assert content.dominant[0] == 3 and content.periodic


def test_fourier_shares_of_a_mixture_are_its_squared_amplitudes():
    content = fourier_content(on_circle([lambda t: 0.6 * np.cos(2 * t) + 0.8 * np.sin(5 * t) + 0.1]))
    # mean square: 0.6^2 / 2 + 0.8^2 / 2 + 0.1^2 = 0.51
    np.testing.assert_allclose(content.power[0, [0, 2, 5]], np.array([0.01, 0.18, 0.32]) / 0.51, atol=1e-12)
    assert content.dominant[0] == 5


def test_along_a_line_frequencies_are_half_cycles_of_a_cosine_series():
    x = (np.arange(50) + 0.5) / 50  # the DCT-II's sample points: no leakage at the ends
    ef = Eigenfunctions(np.ones(1), np.cos(3 * np.pi * x)[None], x, x_label="x")
    content = fourier_content(ef, max_frequency=8)
    np.testing.assert_allclose(content.power[0], np.eye(9)[3], atol=1e-12)
    assert not content.periodic


def test_fourier_content_refuses_eigenfunctions_over_a_plane():
    ef = Eigenfunctions(np.ones(1), np.zeros((1, 4, 4)), np.arange(4.0), np.arange(4.0), "x1")
    with pytest.raises(ValueError, match="plane"):
        fourier_content(ef)


def test_a_small_relu_mlps_eigenfunctions_on_the_circle_rise_in_frequency():
    """Spectral bias: a constant first, then a cos/sin pair of one cycle, then of two (this
    held for every seed tried, at width 64 as at width 1024)."""
    model = build(ModelSpec(width=64, depth=2, activation="relu", seed=3), (2,), 1)
    angles = 2 * np.pi * np.arange(32) / 32
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    ef = eigenfunction_map(model, x, 5, np.linspace(-np.pi, np.pi, 129), on_circle=True, dtype=torch.float64)
    assert list(fourier_content(ef).dominant) == [0, 1, 1, 2, 2]


def test_layer_traces_are_each_layers_jacobian_norms_and_add_up_to_the_kernel():
    model, x = tiny_model(), inputs(6)
    J = explicit_jacobians(model, x)
    sizes = [p.numel() for p in model.parameters()]  # weight, bias per layer, in order
    per_parameter = [(part**2).sum().item() for part in torch.split(J, sizes, dim=2)]
    expected = [per_parameter[i] + per_parameter[i + 1] for i in range(0, len(sizes), 2)]
    result = layer_kernels(model, x)
    assert result.layers == ["layers.fc1", "layers.fc2", "layers.out"]
    np.testing.assert_allclose(result.traces, expected, rtol=1e-10)
    np.testing.assert_allclose(result.traces.sum(), np.trace(empirical_ntk(model, x).numpy()), rtol=1e-12)
    np.testing.assert_allclose(result.total_values, np.linalg.eigvalsh(reference_kernel(J, J, "trace"))[::-1],
                               atol=1e-10)


def test_target_power_over_training_is_each_checkpoints_share():
    model, other, x = tiny_model(), tiny_model(seed=1), inputs(7)
    y = torch.arange(7) % N_OUT
    result = target_power_over_training(model, {0: model.state_dict(), 9: other.state_dict()}, x, y, top_k=(1, 3, 50))
    Y = np.eye(N_OUT)[y.numpy()]
    for row, net in zip(result.share, (model, other)):
        J = explicit_jacobians(net, x)
        _, vectors = np.linalg.eigh(reference_kernel(J, J, "trace").numpy())
        power = ((vectors[:, ::-1].T @ Y) ** 2).sum(1).cumsum() / (Y**2).sum()
        np.testing.assert_allclose(row, power[[0, 2]], rtol=1e-8)
    assert list(result.steps) == [0, 9] and list(result.top_k) == [1, 3]


# ---------------------------------------------------------------- recipes on a stored image run


class Quiet:
    cancelled = False

    def report(self, *args, **kwargs):
        pass


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from engine.experiment import Experiment, train_job
    from engine.store import RunStore

    store = RunStore(tmp_path_factory.mktemp("store"))
    experiment = Experiment("digits", {}, ModelSpec(width=8, depth=1), TrainConfig(steps=10, checkpoint_every=5))
    return store, train_job(Quiet(), experiment, store=store, device="cpu")["run_id"]


def test_image_runs_show_extreme_samples_as_8_by_8_images_of_their_own_data(digits_run):
    from engine import recipes

    store, run_id = digits_run
    result = recipes.ntk_extreme_samples(Quiet(), store, run_id, samples=40, k=2, per_side=2)
    run = recipes.run_data(store, run_id, samples=40)
    assert recipes.ntk_view(store, run_id) == "samples" and result.inputs.shape == (2, 4, 1, 8, 8)
    np.testing.assert_array_equal(result.inputs.reshape(2, 4, 64), run.x.numpy()[result.indices])
    np.testing.assert_array_equal(result.labels, run.y.numpy()[result.indices])


def test_image_runs_refuse_eigenfunctions_over_input_space_with_a_sentence(digits_run):
    from engine import recipes

    store, run_id = digits_run
    with pytest.raises(ValueError, match="extreme samples"):
        recipes.ntk_eigenfunctions(Quiet(), store, run_id, samples=40, k=2)
