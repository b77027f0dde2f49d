"""Probes: what is measured while a network trains, against plain computations."""
from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from engine import data as datasets
from engine import lazy
from engine.experiment import Experiment, load_watched, train_job
from engine.models import ModelSpec, build
from engine.probes import LazyProbe, SharpnessProbe, TwinTrainer, WatchConfig, fixed_subset
from engine.store import RunStore
from engine.train import TrainConfig, Trainer


class Quiet:
    cancelled = False

    def __init__(self):
        self.partials = []

    def report(self, **partial):
        self.partials.append(partial)


def small_trainer(steps=40, **config) -> Trainer:
    data = datasets.load("moons", n=128)
    model = build(ModelSpec(width=8, depth=1), data.input_shape, data.n_outputs)
    config = TrainConfig(**({"optimizer": "gd", "lr": 0.5, "steps": steps, "checkpoint_every": 20,
                             "eval_every": 20} | config))
    return Trainer(model, data, config, device="cpu")


def test_watch_settings_have_sentences():
    errors = WatchConfig(sharpness_every=-1, samples=3).errors()
    assert set(errors) == {"sharpness_every", "samples"}
    assert all(text.endswith(".") for text in errors.values())


def test_watch_settings_travel_as_flat_keys():
    experiment = Experiment(watch=WatchConfig(sharpness_every=25, lazy=True))
    again, errors = Experiment.from_flat(experiment.to_flat())
    assert not errors and again.watch == experiment.watch


def test_sharpness_probe_matches_the_dense_hessian():
    trainer = small_trainer(steps=20)
    probe = SharpnessProbe(trainer, every=10, samples=32)
    trainer.run(on_step=probe.after_step)
    result = probe.result()
    assert list(result.steps) == [0, 10, 20]
    model, (x, y) = trainer.model, fixed_subset(trainer, 32)
    params = dict(model.named_parameters())
    flat = torch.cat([p.detach().flatten() for p in params.values()]).double()

    def loss_of(vector):
        weights, offset = {}, 0
        for name, p in params.items():
            weights[name] = vector[offset:offset + p.numel()].view_as(p).float()
            offset += p.numel()
        return trainer.loss_fn(torch.func.functional_call(model, weights, (x,)), y).double()

    dense = torch.autograd.functional.hessian(loss_of, flat)
    top = torch.linalg.eigvalsh(dense).abs().max().item()
    assert result.eigenvalues[-1, 0] == pytest.approx(top, rel=1e-2)
    assert result.lr == 0.5


def test_lazy_probe_weight_change_matches_the_checkpoints():
    trainer = small_trainer(steps=40)
    probe = LazyProbe(trainer, samples=32)
    trainer.run(on_checkpoint=lambda step, state: probe.at_checkpoint(trainer))
    result = probe.result()
    assert list(result.steps) == sorted(trainer.checkpoints) == [0, 20, 40]
    w0, w = trainer.checkpoints[0], trainer.checkpoints[40]
    plain = np.sqrt(sum(float(((w[k] - w0[k]) ** 2).sum()) for k in w0) / sum(float((w0[k] ** 2).sum()) for k in w0))
    assert result.weight_change[-1] == pytest.approx(plain, rel=1e-5)
    assert result.weight_change[0] == 0 and result.kernel_distance[0] == pytest.approx(0, abs=1e-7)
    assert result.cka_to_init[0] == pytest.approx(1.0)
    assert result.layer_weight_change.shape == (3, len(result.layers))


def test_lazy_probe_kernel_matches_a_fresh_kernel():
    trainer = small_trainer(steps=20)
    probe = LazyProbe(trainer, samples=32)
    K0 = probe.kernel(trainer.model).clone()
    trainer.run(on_checkpoint=lambda step, state: probe.at_checkpoint(trainer))
    from engine import ntk
    x, y = fixed_subset(trainer, 32)
    K = ntk.empirical_ntk(trainer.model, x, kind="trace")
    assert probe.result().kernel_distance[-1] == pytest.approx(lazy.kernel_distance(K0, K), rel=1e-6)
    assert probe.result().alignment[-1] == pytest.approx(lazy.kernel_alignment(K, y), rel=1e-6)
    assert probe.result().kernel_speed[-1] == pytest.approx(1000 * lazy.relative_kernel_change(K0, K) / 20, rel=1e-6)


def test_a_watched_run_reports_its_measures_live_and_keeps_them(tmp_path):
    store = RunStore(tmp_path)
    experiment = Experiment("moons", {"n": 100}, ModelSpec(width=8),
                            TrainConfig(optimizer="gd", lr=0.2, steps=30, checkpoint_every=10),
                            WatchConfig(sharpness_every=10, lazy=True, samples=32))
    ctx = Quiet()
    run_id = train_job(ctx, experiment, store=store, device="cpu")["run_id"]
    live = [p["watch"] for p in ctx.partials if "watch" in p]
    assert live and set(live[-1]) == {"sharpness", "lazy"}
    kept = load_watched(store, run_id)
    assert list(kept["lazy"].steps) == [0, 10, 20, 30]
    assert list(kept["sharpness"].steps) == [0, 10, 20, 30]
    assert Experiment.from_dict(store.settings(run_id)).watch == experiment.watch


def test_an_unwatched_run_keeps_no_measures(tmp_path):
    store = RunStore(tmp_path)
    experiment = Experiment("moons", {"n": 100}, ModelSpec(width=8), TrainConfig(steps=10))
    run_id = train_job(Quiet(), experiment, store=store, device="cpu")["run_id"]
    assert load_watched(store, run_id) == {}


@pytest.mark.parametrize("method", ["kernel", "jvp"])
def test_the_twin_trains_on_the_networks_minibatches(method):
    data = datasets.load("wave", n=64)
    model = build(ModelSpec(width=8), data.input_shape, data.n_outputs)
    initial = copy.deepcopy(model)
    config = TrainConfig(optimizer="sgd", lr=0.05, batch_size=16, steps=12, checkpoint_every=6)
    trainer = Trainer(model, data, config, device="cpu")
    probe = LazyProbe(trainer, samples=16, twin=TwinTrainer(trainer, method))
    trainer.run(on_step=probe.after_step)
    alone = Trainer(lazy.linearize(initial), data, config, device="cpu")
    alone.run()
    with torch.no_grad():
        expected = alone.model(data.x_train)
    assert torch.allclose(probe.twin.outputs(torch.arange(len(data.x_train))), expected, atol=1e-5)


@pytest.mark.parametrize("optimizer, method", [("gd", "kernel"), ("sgd", "kernel"), ("adam", "jvp")])
def test_the_twin_follows_the_kernel_wherever_it_is_exact(optimizer, method):
    assert TwinTrainer(small_trainer(optimizer=optimizer)).method == method


def test_the_probes_twin_gap_and_loss_agree_between_kernel_and_jvp_twins():
    rows = {}
    for method in ("kernel", "jvp"):
        trainer = small_trainer(steps=20, optimizer="gd", loss="mse")
        probe = LazyProbe(trainer, samples=32, twin=TwinTrainer(trainer, method))
        trainer.run(on_step=probe.after_step, on_checkpoint=lambda *_: probe.at_checkpoint(trainer))
        rows[method] = probe.result()
    assert np.allclose(rows["kernel"].twin_loss, rows["jvp"].twin_loss, rtol=1e-4)
    assert np.allclose(rows["kernel"].twin_gap, rows["jvp"].twin_gap, rtol=1e-3, atol=1e-5)


def test_twins_train_in_parallel_threads_as_they_do_alone():
    data = datasets.load("wave", n=64)
    config = TrainConfig(optimizer="gd", lr=0.1, steps=15)

    def trained_twin(seed):
        twin = lazy.linearize(build(ModelSpec(width=8, seed=seed), data.input_shape, data.n_outputs))
        Trainer(twin, data, config, device="cpu").run()
        return torch.cat([p.detach().flatten() for p in twin.parameters()])

    alone = [trained_twin(seed) for seed in (0, 1)]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(trained_twin, (0, 1)))
    assert all(torch.allclose(a, b) for a, b in zip(alone, together))
