"""Lazy versus rich: the measures against plain numpy formulas, the linearized twin against
explicit Jacobians, the phase diagram against networks trained alone, and the known laws."""
import dataclasses

import numpy as np
import pytest
import torch

from engine import data as datasets
from engine.experiment import Experiment, load_model
from engine.jobs import Cancelled, JobContext
from engine.lazy import (
    KernelTwin,
    kernel_alignment,
    kernel_distance,
    kernel_trajectory,
    kernel_twin_refusal,
    linearize,
    phase_diagram,
    relative_kernel_change,
    relative_weight_change,
    sweep_job,
)
from engine.models import Centered, ModelSpec, build, lr_multipliers
from engine.ntk import empirical_ntk
from engine.results import PhaseDiagram, from_arrays, to_arrays
from engine.store import RunStore
from engine.sweep import STAGING_FOLDER
from engine.train import TrainConfig, Trainer


def random_kernel(n=6, seed=0):
    A = np.random.default_rng(seed).normal(size=(n, n))
    return A @ A.T


def numpy_alignment(K, Y):
    """<HKH, H YY^T H>_F / (||HKH||_F ||H YY^T H||_F) with explicit centring matrices."""
    H = np.eye(len(K)) - np.ones((len(K), len(K))) / len(K)
    Kc, L = H @ K @ H, H @ Y @ Y.T @ H
    return np.sum(Kc * L) / (np.linalg.norm(Kc) * np.linalg.norm(L))


def two_models():
    spec = ModelSpec(width=5, depth=2)
    model0, model = build(spec, (3,), 2), build(spec, (3,), 2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p) + 0.05)
    return model0, model


def test_relative_weight_change_matches_numpy_in_total_and_per_layer():
    model0, model = two_models()
    w0 = {n: p.detach().numpy() for n, p in model0.named_parameters()}
    w = {n: p.detach().numpy() for n, p in model.named_parameters()}
    change = relative_weight_change(model0, model)
    flat = lambda d, names: np.concatenate([d[n].ravel() for n in names])  # noqa: E731
    total = np.linalg.norm(flat(w, w) - flat(w0, w)) / np.linalg.norm(flat(w0, w))
    assert change.total == pytest.approx(total)
    fc2 = ["layers.fc2.weight", "layers.fc2.bias"]
    expected = np.linalg.norm(flat(w, fc2) - flat(w0, fc2)) / np.linalg.norm(flat(w0, fc2))
    assert sorted(change.layers) == ["layers.fc1", "layers.fc2", "layers.out"]
    assert change.layers["layers.fc2"] == pytest.approx(expected)


def test_state_dicts_and_modules_give_the_same_weight_change():
    model0, model = two_models()
    from_states = relative_weight_change(model0.state_dict(), model.state_dict())
    assert from_states == relative_weight_change(model0, model)


def test_a_module_leaves_out_the_frozen_weights_of_a_centred_model():
    model0, model = two_models()
    centred0, centred = Centered(model0, 2.0), Centered(model, 2.0)
    assert relative_weight_change(centred0.state_dict(), centred).total == pytest.approx(
        relative_weight_change(model0, model).total)


def test_relative_kernel_change_matches_numpy():
    K0, K = random_kernel(), random_kernel(seed=1)
    assert relative_kernel_change(K0, K) == pytest.approx(np.linalg.norm(K - K0) / np.linalg.norm(K0))


def test_kernel_distance_matches_numpy():
    K0, K = random_kernel(), random_kernel(seed=1)
    expected = 1 - np.sum(K0 * K) / (np.linalg.norm(K0) * np.linalg.norm(K))
    assert kernel_distance(torch.tensor(K0), K) == pytest.approx(expected)


def test_kernel_distance_ignores_scale():
    K = random_kernel()
    assert kernel_distance(K, 7.5 * K) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("columns", [1, 3])
def test_kernel_alignment_matches_numpy(columns):
    K, Y = random_kernel(), np.random.default_rng(2).normal(size=(6, columns))
    y = Y[:, 0] if columns == 1 else Y
    assert kernel_alignment(K, y) == pytest.approx(numpy_alignment(K, Y))


def test_kernel_alignment_of_class_labels_uses_one_hot_targets():
    K, labels = random_kernel(), np.array([0, 1, 2, 1, 0, 2])
    assert kernel_alignment(K, labels) == pytest.approx(numpy_alignment(K, np.eye(3)[labels]))


def test_target_kernel_aligns_perfectly_even_off_centre():
    y = np.random.default_rng(3).normal(size=8) + 2.0
    assert kernel_alignment(np.outer(y, y), y) == pytest.approx(1.0)


def test_kernel_trajectory_starts_at_zero_change():
    model0, model = two_models()
    checkpoints = {0: model0.state_dict(), 10: model.state_dict()}
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    trajectory = kernel_trajectory(model0, checkpoints, x, y, k=3)
    assert trajectory.steps.tolist() == [0, 10]
    assert trajectory.relative_change[0] == 0 and trajectory.weight_change[0] == 0
    assert trajectory.subspace_overlap[0] == pytest.approx(1.0)
    assert trajectory.distance[1] > 0 and trajectory.alignment.shape == (2,)


# ---------------------------------------------------------------- the linearized twin


def tiny_float64_mlp(alpha=None):
    spec = ModelSpec(width=5, depth=2, activation="tanh", parametrization="mup", base_width=2, alpha=alpha)
    return build(spec, (3,), 2).double()


def moved(twin, scale=0.3, seed=0):
    """The twin with every trainable weight moved to a random point near w0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return twin


def taylor_reference(network, w, x):
    """f(x; w0) + J(x; w0) (w - w0) with the Jacobian J formed explicitly (network at w0)."""
    names = [n for n, _ in network.named_parameters()]
    shapes = [p.shape for _, p in network.named_parameters()]
    w0 = torch.cat([p.detach().reshape(-1) for p in network.parameters()])
    dw = torch.cat([w[n].detach().reshape(-1) for n in names]) - w0

    def f(flat):
        params, i = {}, 0
        for name, shape in zip(names, shapes):
            params[name] = flat[i:i + shape.numel()].reshape(shape)
            i += shape.numel()
        return torch.func.functional_call(network, params, (x,))

    J = torch.autograd.functional.jacobian(f, w0)  # (N, O, P)
    return f(w0) + J @ dw, J


def twin_weights(twin, prefix="model."):
    return {n[len(prefix):]: p for n, p in twin.named_parameters()}


def test_linearized_twin_is_the_first_order_taylor_model():
    network, x = tiny_float64_mlp(), torch.randn(7, 3, dtype=torch.float64)
    twin = moved(linearize(network))
    expected, _ = taylor_reference(network, twin_weights(twin), x)
    assert torch.allclose(twin(x), expected, atol=1e-12)


def test_linearized_twin_equals_the_network_at_w0():
    network, x = tiny_float64_mlp(), torch.randn(7, 3, dtype=torch.float64)
    assert torch.allclose(linearize(network)(x), network(x), atol=1e-14)


def test_gradient_through_the_twin_is_the_transposed_jacobian_times_the_residual():
    network, x = tiny_float64_mlp(), torch.randn(7, 3, dtype=torch.float64)
    y = torch.randn(7, 2, dtype=torch.float64)
    twin = moved(linearize(network))
    residual = twin(x) - y
    (0.5 * (residual**2).sum()).backward()
    _, J = taylor_reference(network, twin_weights(twin), x)
    expected = torch.einsum("nop,no->p", J, residual.detach())
    got = torch.cat([p.grad.reshape(-1) for p in twin.parameters()])
    assert torch.allclose(got, expected, atol=1e-10)


def test_training_the_twin_leaves_the_network_alone():
    network = tiny_float64_mlp()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    moved(linearize(network))
    assert all(torch.equal(network.state_dict()[k], before[k]) for k in before)


@pytest.mark.parametrize("alpha", [None, 4.0])
def test_twin_gets_the_networks_per_layer_learning_rates(alpha):
    network = tiny_float64_mlp(alpha)
    twin = linearize(network)
    for optimizer in ("sgd", "adam"):
        rates = lr_multipliers(network, optimizer, base_width=2)
        assert lr_multipliers(twin, optimizer, base_width=2) == {f"model.{k}": v for k, v in rates.items()}
    assert len(set(lr_multipliers(network, "sgd", base_width=2).values())) > 1  # the check means something


def test_twin_of_a_centred_model_is_alpha_times_the_jacobian_step_and_divides_its_loss():
    network, x = tiny_float64_mlp(alpha=4.0), torch.randn(7, 3, dtype=torch.float64)
    twin = linearize(network)
    assert isinstance(twin, Centered) and twin.alpha == 4.0  # so Trainer divides its loss by alpha^2
    assert torch.allclose(twin(x), torch.zeros(7, 2, dtype=torch.float64), atol=1e-14)
    moved(twin)
    expected, _ = taylor_reference(network.model, twin_weights(twin, "model.model."), x)
    assert torch.allclose(twin(x), 4.0 * (expected - network.model(x)), atol=1e-12)


def test_a_trained_centred_model_is_not_linearized_at_its_w0():
    network = tiny_float64_mlp(alpha=2.0)
    moved(network)
    with pytest.raises(ValueError, match="linearize the network inside"):
        linearize(network)


@pytest.fixture(scope="module")
def small_circle():
    return datasets.load("circle", n=64)


def gap_after_training(data, alpha, steps=60):
    """||f - f_lin|| / ||f|| on the training inputs after training both the same way."""
    config = TrainConfig(optimizer="sgd", lr=0.1, steps=steps, batch_size=16, eval_every=steps)
    network = build(ModelSpec(width=32, depth=1, alpha=alpha), data.input_shape, data.n_outputs)
    twin = linearize(network)
    for model in (network, twin):
        Trainer(model, data, config, device="cpu").run()
    with torch.no_grad():
        f, f_lin = network(data.x_train), twin(data.x_train)
    return float((f - f_lin).norm() / f.norm())


def test_a_lazy_network_tracks_its_twin_and_a_rich_one_leaves_it(small_circle, one_thread):
    assert gap_after_training(small_circle, alpha=1000.0) < 0.01
    assert gap_after_training(small_circle, alpha=0.3) > 0.1


# ---------------------------------------------------------------- the twin in function space


def float64_data(name, **options):
    data = datasets.load(name, **options)
    floats = {f: getattr(data, f).double() for f in ("x_train", "y_train", "x_test", "y_test")
              if getattr(data, f).is_floating_point()}
    return dataclasses.replace(data, **floats)


def jvp_twin_run(model, data, config, steps, base_width):
    """The linearized network trained by `Trainer`: outputs on the train and test inputs, and its losses."""
    trainer = Trainer(linearize(model), data, config, device="cpu", base_width=base_width)
    for _ in range(steps):
        trainer.step()
    trainer.flush()
    with torch.no_grad():
        return trainer.model(data.x_train), trainer.model(data.x_test), trainer.history.train_loss


RUNS = {  # name: (data, its options, model, config)
    "gd-mse": ("circle", {"n": 40}, ModelSpec(width=12, depth=2, parametrization="mup", base_width=4),
               TrainConfig(optimizer="gd", lr=0.3)),
    "sgd-momentum-mse-centred": ("wave", {"n": 48}, ModelSpec(width=12, depth=1, alpha=3.0, activation="tanh"),
                                 TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, batch_size=8)),
    "gd-ce": ("moons", {"n": 40}, ModelSpec(width=12, depth=2, parametrization="ntk"),
              TrainConfig(optimizer="gd", lr=0.5, loss="ce")),
    "sgd-mse-on-classes": ("moons", {"n": 40}, ModelSpec(width=12, depth=1, parametrization="mup", base_width=4),
                           TrainConfig(optimizer="sgd", lr=0.2, momentum=0.0, batch_size=8, loss="mse")),
}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_the_kernel_twin_follows_the_jvp_twin_step_for_step(run):
    name, options, spec, config = RUNS[run]
    data = float64_data(name, **options)
    model = build(spec, data.input_shape, data.n_outputs).double()
    train, test, losses = jvp_twin_run(model, data, config, steps=25, base_width=4)
    twin = KernelTwin(model, data, config, device="cpu", base_width=4)
    for _ in range(25):
        twin.step()
    assert torch.allclose(twin.outputs(), train, rtol=1e-9, atol=1e-9)
    assert torch.allclose(twin.predict(data.x_test), test, rtol=1e-9, atol=1e-9)
    assert np.allclose(twin.train_loss, losses, rtol=1e-9, atol=1e-12)


def test_full_batch_mse_is_the_kernel_recursion_of_the_residual():
    """u <- u - lr (2 / (N O)) K0 (u - y) with the plain NTK K0 (one learning rate everywhere)."""
    data = float64_data("circle", n=40)
    model = build(ModelSpec(width=12, depth=1), data.input_shape, data.n_outputs).double()
    config = TrainConfig(optimizer="gd", lr=0.3)
    twin = KernelTwin(model, data, config, device="cpu")
    x, y = data.x_train, data.y_train
    u, K0 = model(x).detach(), empirical_ntk(model, x, kind="full")
    for _ in range(10):
        twin.step()
        u = u - config.lr * 2 / u.numel() * (K0 @ (u - y).reshape(-1)).reshape(u.shape)
    assert torch.allclose(twin.outputs(), u, atol=1e-12)


@pytest.mark.parametrize("change, sentence", [({"optimizer": "adam"}, "Adam"),
                                              ({"weight_decay": 1e-3}, "Weight decay")])
def test_the_kernel_twin_says_why_it_cannot_follow_a_run(change, sentence):
    data = datasets.load("circle", n=40)
    model = build(ModelSpec(width=8), data.input_shape, data.n_outputs)
    config = TrainConfig(**({"optimizer": "gd"} | change))
    assert sentence in kernel_twin_refusal(model, data, config)
    with pytest.raises(ValueError, match=sentence):
        KernelTwin(model, data, config, device="cpu")


# ---------------------------------------------------------------- the phase diagram


SGD = TrainConfig(optimizer="sgd", lr=0.05, steps=40, batch_size=16, eval_every=20, checkpoint_every=20)


def test_a_phase_diagram_cell_equals_the_same_network_trained_and_measured_alone(small_circle, one_thread):
    spec, (alpha, width, seed) = ModelSpec(depth=1, activation="tanh"), (3.0, 16, 1)
    n_train = len(small_circle.x_train)
    diagram = phase_diagram(small_circle, spec, SGD, [0.5, alpha], [width], [0, seed], device="cpu",
                            kernel_samples=n_train)  # the whole training set, in another order
    cell = (1, 0, 1)
    cell_spec = dataclasses.replace(spec, alpha=alpha, width=width, seed=seed)
    network = build(cell_spec, small_circle.input_shape, small_circle.n_outputs)
    start = build(cell_spec, small_circle.input_shape, small_circle.n_outputs).model
    trainer = Trainer(network, small_circle, SGD, device="cpu")
    trainer.run()
    K0 = empirical_ntk(start, small_circle.x_train)
    K = empirical_ntk(network.model, small_circle.x_train)
    assert diagram.weight_change[cell] == pytest.approx(relative_weight_change(start, network.model).total, rel=1e-4)
    assert diagram.kernel_distance[cell] == pytest.approx(kernel_distance(K0, K), rel=1e-3, abs=1e-7)
    assert diagram.kernel_change[cell] == pytest.approx(relative_kernel_change(K0, K), rel=1e-3)
    assert diagram.alignment[cell] == pytest.approx(kernel_alignment(K, small_circle.y_train), rel=1e-4)
    assert diagram.initial_alignment[cell] == pytest.approx(kernel_alignment(K0, small_circle.y_train), rel=1e-4)
    with torch.no_grad():  # the plain loss of the output, on the trainer's evaluation subsets
        test_loss = trainer.loss_fn(network(trainer._eval_test[0]), trainer._eval_test[1]) * alpha**2
        train_loss = trainer.loss_fn(network(trainer._eval_train[0]), trainer._eval_train[1]) * alpha**2
    assert diagram.test_loss[cell] == pytest.approx(float(test_loss), rel=1e-4)
    assert diagram.train_loss[cell] == pytest.approx(float(train_loss), rel=1e-4)


def test_weights_and_kernel_move_less_as_alpha_grows(small_circle, one_thread):
    config = dataclasses.replace(SGD, steps=100)
    diagram = phase_diagram(small_circle, ModelSpec(depth=1), config, [1.0, 10.0, 100.0], [32], [0], device="cpu")
    weight_change, distance = diagram.weight_change[:, 0, 0], diagram.kernel_distance[:, 0, 0]
    assert np.all(weight_change[1:] < weight_change[:-1] / 3)  # about 1/alpha
    assert np.all(distance[1:] < distance[:-1])
    assert not diagram.diverged.any() and diagram.run_ids.shape == (3, 1)


def test_progress_runs_to_one_and_raising_from_it_stops_the_sweep(small_circle):
    fractions = []
    config = dataclasses.replace(SGD, steps=5)
    phase_diagram(small_circle, ModelSpec(depth=1), config, [1.0], [4, 8], [0], device="cpu",
                  progress=fractions.append)
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0) and len(fractions) >= 4

    def cancel(fraction):
        raise Cancelled("stop")

    with pytest.raises(Cancelled):
        phase_diagram(small_circle, ModelSpec(depth=1), config, [1.0], [4], [0], device="cpu", progress=cancel)


@pytest.mark.parametrize("alphas, widths, seeds, sentence", [
    ([], [8], [0], "at least one output scale"),
    ([1.0, 1.0], [8], [0], "must differ"),
    ([-1.0], [8], [0], "alpha must be a positive number"),
    ([1.0], [0], [0], "Width must be"),
    ([1.0], [8.5], [0], "whole number"),
    ([1.0], [8], [-1], "Seeds must be 0 or more"),
])
def test_a_bad_grid_gets_a_sentence(small_circle, alphas, widths, seeds, sentence):
    with pytest.raises(ValueError, match=sentence):
        phase_diagram(small_circle, ModelSpec(), SGD, alphas, widths, seeds, device="cpu")


def test_a_phase_diagram_survives_saving_and_loading(tmp_path, small_circle):
    diagram = phase_diagram(small_circle, ModelSpec(depth=1), dataclasses.replace(SGD, steps=3), [1.0, 2.0], [4],
                            [0, 1], device="cpu")
    diagram.run_ids = np.array([["run-a"], ["run-b"]])
    runs = RunStore(tmp_path)
    runs.save_sweep("sweep-x", *to_arrays(diagram))
    loaded = from_arrays(PhaseDiagram, *runs.load_sweep("sweep-x"))
    for f in dataclasses.fields(PhaseDiagram):
        a, b = getattr(diagram, f.name), getattr(loaded, f.name)
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f") if isinstance(a, np.ndarray) else a == b


# ---------------------------------------------------------------- the sweep job


def job_context(cancel_after=None):
    """A real JobContext whose reports are recorded; it asks to cancel after some reports."""
    reports = []

    def on_report(progress, message, partial):
        reports.append((progress, message))
        if cancel_after is not None and len(reports) >= cancel_after:
            ctx.stop_event.set()

    ctx = JobContext("test", on_report)
    return ctx, reports


def tiny_sweep_experiment(**train):
    return Experiment("circle", {"n": 64}, ModelSpec(depth=1),
                      TrainConfig(**{"optimizer": "sgd", "lr": 0.05, "steps": 30, "batch_size": 16, "eval_every": 10,
                                     "checkpoint_every": 10} | train))


def test_sweep_job_keeps_one_ordinary_run_per_cell(tmp_path, one_thread):
    runs, experiment = RunStore(tmp_path), tiny_sweep_experiment()
    ctx, reports = job_context()
    diagram = sweep_job(ctx, runs, experiment, [1.0, 10.0], [4, 8], [0], device="cpu")
    assert diagram.run_ids.shape == (2, 2) and len(runs.list()) == 4
    run_id = diagram.run_ids[1, 0]
    settings = runs.settings(run_id)
    assert (settings["model"]["alpha"], settings["model"]["width"], settings["model"]["seed"]) == (10.0, 4, 0)
    assert runs.checkpoint_steps(run_id) == [0, 10, 20, 30] and runs.metrics(run_id)["test_loss"]
    start, end = load_model(runs, run_id, step=0), load_model(runs, run_id)
    assert relative_weight_change(start.model, end.model).total == pytest.approx(diagram.weight_change[1, 0, 0],
                                                                               rel=1e-5)
    assert reports[-1][0] == 1.0


def test_the_same_sweep_again_comes_from_the_cache(tmp_path, one_thread):
    runs, experiment = RunStore(tmp_path), tiny_sweep_experiment()
    first = sweep_job(job_context()[0], runs, experiment, [1.0, 10.0], [4], [0], device="cpu")
    other_width = dataclasses.replace(experiment, model=dataclasses.replace(experiment.model, width=99))
    again = sweep_job(job_context()[0], runs, other_width, [1.0, 10.0], [4], [0], device="cpu")
    assert len(runs.list()) == 2 and np.array_equal(again.run_ids, first.run_ids)
    assert np.array_equal(again.weight_change, first.weight_change)
    runs.delete(first.run_ids[0, 0])
    assert sweep_job(job_context()[0], runs, experiment, [1.0, 10.0], [4], [0], device="cpu").run_ids[0, 0] == ""


class CancelOnceAWidthTrains(JobContext):
    """A job context that asks to cancel as soon as a width cell has begun (its lock is made
    just before it trains), and records the per-cell reports."""

    def __init__(self, store):
        super().__init__("test", lambda progress, message, partial: self.cells.append(partial.get("cells")))
        self.store, self.cells = store, []

    @property
    def cancelled(self) -> bool:
        return any((self.store.root / STAGING_FOLDER).glob("*.lock"))


def test_sweep_job_on_the_sweep_mechanism_gives_the_in_process_diagram(tmp_path, one_thread):
    experiment = tiny_sweep_experiment()
    grid = ([1.0, 10.0], [4, 8], [0, 1])
    data = datasets.load(experiment.data, **experiment.data_options)
    alone = phase_diagram(data, experiment.model, experiment.train, *grid, device="cpu")
    swept = sweep_job(job_context()[0], RunStore(tmp_path), experiment, *grid, device="cpu")
    for name in ("weight_change", "kernel_distance", "kernel_change", "alignment", "initial_alignment",
                 "train_loss", "test_loss", "diverged"):
        np.testing.assert_allclose(getattr(swept, name), getattr(alone, name), rtol=1e-6, err_msg=name)


def test_every_network_of_the_grid_is_a_run_and_a_rerun_resumes_from_the_finished_widths(tmp_path, one_thread):
    runs, experiment = RunStore(tmp_path), tiny_sweep_experiment()
    sweep_job(job_context()[0], runs, experiment, [1.0, 10.0], [4], [0, 1], device="cpu")
    first = {run.id: run.created for run in runs.list()}
    assert len(first) == 4  # 2 alphas x 2 seeds
    reports = []
    ctx = JobContext("test", lambda progress, message, partial: reports.append(partial.get("cells")))
    diagram = sweep_job(ctx, runs, experiment, [1.0, 10.0], [4, 8], [0, 1], device="cpu")
    widths = [cells for cells in reports if cells][-1]
    assert [cell["trained"] for cell in widths] == [False, True]  # width 4 found, width 8 trained
    assert {run.id: run.created for run in runs.list() if run.id in first} == first and len(runs.list()) == 8
    assert set(diagram.run_ids.ravel()) <= {run.id for run in runs.list()}


def test_a_cancelled_sweep_leaves_no_half_width_and_no_cache(tmp_path):
    runs, experiment = RunStore(tmp_path), tiny_sweep_experiment(steps=10_000_000)
    ctx = CancelOnceAWidthTrains(runs)
    with pytest.raises(Cancelled):
        sweep_job(ctx, runs, experiment, [1.0, 10.0], [4], [0], device="cpu")
    assert runs.list() == [] and all(meta.get("kind") == "cells" for _, meta in runs.list_sweeps())
    assert [p for p in (runs.root / STAGING_FOLDER).iterdir() if p.is_dir()] == []


@pytest.mark.parametrize("change, grid, sentence", [
    ({}, ([1.0] * 1, list(range(1, 122)), [0]), "limit is 120"),
    ({"steps": 1_000_000}, ([1.0], [2048], [0]), "floating-point operations"),
    ({"lr": -1.0}, ([1.0], [8], [0]), "Learning rate"),
    ({}, ([], [8], [0]), "at least one output scale"),
])
def test_sweep_job_refuses_bad_or_too_large_sweeps_with_a_sentence(tmp_path, change, grid, sentence):
    experiment = tiny_sweep_experiment()
    experiment.train = dataclasses.replace(experiment.train, **change)
    with pytest.raises(ValueError, match=sentence):
        sweep_job(job_context()[0], RunStore(tmp_path), experiment, *grid, device="cpu")
