"""The vmap ensemble trains every member exactly as `Trainer` trains it alone."""
import math

import pytest
import torch

from engine import data as datasets
from engine.ensemble import EnsembleTrainer
from engine.models import ModelSpec, build
from engine.train import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def circle():
    return datasets.load("circle", n=64)


def build_all(specs, data):
    return [build(spec, data.input_shape, data.n_outputs) for spec in specs]


def trained_alone(spec, data, config):
    trainer = Trainer(build(spec, data.input_shape, data.n_outputs), data, config, device="cpu")
    trainer.run()
    return trainer


def largest_difference(state, reference):
    assert state.keys() == reference.keys()
    return max(float((state[k] - reference[k]).abs().max()) for k in reference)


@pytest.mark.parametrize("optimizer, parametrization, alphas", [
    ("adam", "mup", (0.5, 20.0)),      # per-layer learning rates, adaptive steps
    ("sgd", "standard", (0.5, 20.0)),  # momentum, the loss divided by alpha^2
    ("adam", "ntk", (None, None)),     # plain (not centred) networks
])
def test_each_member_ends_where_it_would_alone(circle, optimizer, parametrization, alphas):
    config = TrainConfig(optimizer=optimizer, lr=0.02, steps=30, batch_size=16, eval_every=10)
    specs = [ModelSpec(width=12, depth=2, parametrization=parametrization, base_width=4, alpha=a, seed=s)
             for a, s in zip(alphas, (0, 1))]
    ensemble = EnsembleTrainer(build_all(specs, circle), circle, config, device="cpu")
    ensemble.run()
    for m, spec in enumerate(specs):
        alone = trained_alone(spec, circle, config)
        assert largest_difference(ensemble.member_state(m), alone.model.state_dict()) < 1e-5
        assert ensemble.histories[m].test_loss == pytest.approx(alone.history.test_loss, rel=1e-4)
        assert ensemble.histories[m].step == alone.history.step


def test_a_diverged_member_leaves_the_others_as_they_would_be_alone(circle):
    config = TrainConfig(optimizer="sgd", lr=0.05, steps=20, batch_size=16)
    specs = [ModelSpec(width=8, depth=1, seed=s) for s in (0, 1)]
    models = build_all(specs, circle)
    with torch.no_grad():
        models[0].layers.out.weight[0, 0] = math.nan
    ensemble = EnsembleTrainer(models, circle, config, device="cpu")
    outcome = ensemble.run()
    assert outcome.status == "done" and ensemble.diverged_at == [0, None]  # caught by the evaluation at step 0
    alone = trained_alone(specs[1], circle, config)
    assert largest_difference(ensemble.member_state(1), alone.model.state_dict()) < 1e-5


def test_member_state_loads_into_a_freshly_built_model_and_gives_its_outputs(circle):
    config = TrainConfig(optimizer="sgd", lr=0.05, steps=5, batch_size=16)
    specs = [ModelSpec(width=8, depth=1, alpha=a) for a in (1.0, 3.0)]
    ensemble = EnsembleTrainer(build_all(specs, circle), circle, config, device="cpu")
    ensemble.run()
    fresh = build(specs[1], circle.input_shape, circle.n_outputs)
    fresh.load_state_dict(ensemble.member_state(1))
    with torch.no_grad():
        expected = ensemble.outputs(circle.x_test)[1]
        assert torch.allclose(fresh(circle.x_test), expected, atol=1e-6)


def test_checkpoints_are_kept_for_the_chosen_members_only(circle):
    config = TrainConfig(optimizer="sgd", lr=0.05, steps=10, batch_size=16, checkpoint_every=4)
    ensemble = EnsembleTrainer(build_all([ModelSpec(width=4, depth=1, seed=s) for s in (0, 1)], circle),
                               circle, config, device="cpu", checkpoint_members=[1])
    ensemble.run()
    assert list(ensemble.checkpoints) == [1] and sorted(ensemble.checkpoints[1]) == [0, 4, 8, 10]


@pytest.mark.parametrize("specs, sentence", [
    ([ModelSpec(width=4), ModelSpec(width=5)], "same architecture"),
    ([ModelSpec(width=4, alpha=1.0), ModelSpec(width=4)], "all be Centered"),
    ([ModelSpec(width=4, parametrization="mup"), ModelSpec(width=4)], "learning rates"),
])
def test_members_that_cannot_train_together_are_refused(circle, specs, sentence):
    with pytest.raises(ValueError, match=sentence):
        EnsembleTrainer(build_all(specs, circle), circle, TrainConfig(optimizer="sgd"), device="cpu")


def test_adversarial_training_is_refused_with_a_sentence(circle):
    config = TrainConfig(optimizer="sgd", adversarial_eps=0.1)
    with pytest.raises(ValueError, match="does not train adversarially"):
        EnsembleTrainer(build_all([ModelSpec(width=4)], circle), circle, config, device="cpu")
