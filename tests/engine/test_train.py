import math

import pytest
import torch

from engine import data as datasets
from engine.models import ModelSpec, build
from engine.train import TrainConfig, Trainer, make_loss, make_optimizer


@pytest.fixture(scope="module")
def moons():
    return datasets.load("moons", n=1000, noise=0.1, seed=0)


def trainer_for(data, spec=ModelSpec(width=32), **config):
    model = build(spec, data.input_shape, data.n_outputs)
    return Trainer(model, data, TrainConfig(**config), device="cpu")


def test_moons_reaches_97_percent_test_accuracy(moons):
    t = trainer_for(moons, optimizer="adam", lr=0.01, steps=600, eval_every=600)
    outcome = t.run()
    assert outcome.status == "done"
    assert t.history.test_accuracy[-1] >= 0.97


def test_same_seeds_give_identical_runs(moons):
    runs = [trainer_for(moons, optimizer="sgd", lr=0.1, steps=50, eval_every=10) for _ in range(2)]
    for t in runs:
        t.run()
    assert runs[0].history == runs[1].history


def test_another_batch_seed_gives_another_run(moons):
    a = trainer_for(moons, steps=30, seed=0)
    b = trainer_for(moons, steps=30, seed=1)
    a.run(), b.run()
    assert a.history.train_loss != b.history.train_loss


def test_every_step_is_recorded(moons):
    t = trainer_for(moons, steps=37, eval_every=10)
    t.run()
    assert t.history.step == list(range(1, 38))
    assert t.history.eval_step == [0, 10, 20, 30, 37]


def test_checkpoints_at_start_schedule_and_end(moons):
    t = trainer_for(moons, steps=25, checkpoint_every=10)
    t.run()
    assert sorted(t.checkpoints) == [0, 10, 20, 25]


def test_full_batch_gd_step_equals_the_gradient_step(moons):
    t = trainer_for(moons, optimizer="gd", lr=0.5, steps=1)
    before = {k: v.clone() for k, v in t.model.named_parameters()}
    loss = torch.nn.functional.cross_entropy(t.model(moons.x_train), moons.y_train)
    grads = dict(zip(before, torch.autograd.grad(loss, list(t.model.parameters()))))
    t.step()
    for name, p in t.model.named_parameters():
        assert torch.allclose(p, before[name] - 0.5 * grads[name], atol=1e-6)


def test_nan_loss_ends_the_run_as_diverged_with_a_sentence(moons):
    t = trainer_for(moons, optimizer="sgd", lr=90.0, momentum=0.99, loss="mse",
                    steps=2000, eval_every=1000, spec=ModelSpec(width=64, init_scale=8.0))
    outcome = t.run()
    assert outcome.status == "diverged"
    assert 0 < outcome.step < 2000
    assert "diverged" in outcome.message and outcome.message.endswith(".")
    assert not math.isfinite(t.history.train_loss[outcome.step - 1])


def test_stop_request_ends_the_run_at_once(moons):
    t = trainer_for(moons, steps=10_000)
    outcome = t.run(should_stop=lambda: t.step_count >= 5)
    assert (outcome.status, outcome.step) == ("stopped", 5)
    assert t.history.eval_step[-1] == 5 and 5 in t.checkpoints


def test_regression_reports_nan_accuracy():
    data = datasets.load("wave", n=100)
    t = trainer_for(data, steps=5, eval_every=5)
    t.run()
    assert math.isnan(t.history.test_accuracy[-1])


def test_centered_model_divides_the_loss_by_alpha_squared():
    out, target = torch.randn(8, 1), torch.randn(8, 1)
    plain = make_loss("mse", "regression", 0)(out, target)
    scaled = make_loss("mse", "regression", 0, alpha=10.0)(out, target)
    assert torch.isclose(scaled, plain / 100)


def test_mse_on_classes_regresses_one_hot_targets():
    out, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    value = make_loss("mse", "classification", 3)(out, labels)
    assert torch.isclose(value, ((out - torch.eye(3)[labels]) ** 2).mean())


def test_cross_entropy_on_regression_is_refused():
    with pytest.raises(ValueError, match="MSE"):
        make_loss("ce", "regression", 0)


def test_mup_optimizer_has_per_layer_learning_rates(moons):
    t = trainer_for(moons, spec=ModelSpec(width=128, parametrization="mup", base_width=64),
                    optimizer="sgd", lr=0.1)
    assert sorted(g["lr"] for g in t.optimizer.param_groups) == pytest.approx([0.05, 0.1, 0.2])


@pytest.mark.parametrize("bad", [dict(lr=-1.0), dict(lr=0.0), dict(batch_size=0), dict(steps=0),
                                 dict(optimizer="rmsprop"), dict(momentum=1.0), dict(weight_decay=-0.1)])
def test_invalid_settings_raise_sentences(moons, bad):
    with pytest.raises(ValueError, match=r"\.$"):
        trainer_for(moons, **bad)


def test_a_centered_run_reports_the_plain_loss_not_the_scaled_one():
    data = datasets.load("wave", n=64)
    spec = ModelSpec(width=8, alpha=10.0)
    trainer = Trainer(build(spec, data.input_shape, data.n_outputs), data, TrainConfig(steps=1), device="cpu")
    x, y = trainer._eval_train
    with torch.no_grad():
        plain = torch.nn.functional.mse_loss(trainer.model.eval()(x), y).item()
    assert trainer.evaluate()["train_loss"] == pytest.approx(plain, rel=1e-5)


# ---------------------------------------------------------------- adversarial training


def attack_success(model, data, eps=0.3):
    """The share of training inputs that a 10-step PGD attack of radius eps misclassifies."""
    from engine.levelset import pgd_attack

    model.eval()
    x_adv = pgd_attack(model, data.x_train, data.y_train, eps, 2.5 * eps / 10, 10, data.bounds)
    with torch.no_grad():
        return (model(x_adv).argmax(dim=1) != data.y_train).float().mean().item()


@pytest.mark.usefixtures("one_thread")
def test_adversarial_training_makes_pgd_attacks_succeed_far_less_often():
    data = datasets.load("moons", n=200, noise=0.1, seed=0)
    settings = dict(spec=ModelSpec(width=16), steps=100, lr=0.05, batch_size=160, eval_every=100)
    standard = trainer_for(data, **settings)
    robust = trainer_for(data, adversarial_eps=0.3, adversarial_steps=2, **settings)
    standard.run(), robust.run()
    assert attack_success(robust.model, data) < 0.6 * attack_success(standard.model, data)


def test_an_adversarial_step_is_a_gradient_step_at_the_pgd_inputs(moons):
    from engine.levelset import pgd_attack

    t = trainer_for(moons, optimizer="gd", lr=0.5, steps=1, adversarial_eps=0.2, adversarial_steps=2)
    before = {k: v.clone() for k, v in t.model.named_parameters()}
    x_adv = pgd_attack(t.model, moons.x_train, moons.y_train, 0.2, 0.25, 2, moons.bounds,
                       random_start=True, seed=0)  # the trainer's seed at step 0
    loss = torch.nn.functional.cross_entropy(t.model(x_adv), moons.y_train)
    grads = dict(zip(before, torch.autograd.grad(loss, list(t.model.parameters()))))
    t.step()
    for name, p in t.model.named_parameters():
        assert torch.allclose(p, before[name] - 0.5 * grads[name], atol=1e-6)


@pytest.mark.parametrize("bad, field", [(dict(adversarial_eps=-0.1), "adversarial_eps"),
                                        (dict(adversarial_steps=0), "adversarial_steps"),
                                        (dict(adversarial_step_size=0.0), "adversarial_step_size")])
def test_invalid_adversarial_settings_are_named_in_sentences(bad, field):
    errors = TrainConfig(**bad).errors()
    assert list(errors) == [field] and errors[field].startswith("Adversarial") and errors[field].endswith(".")


def test_adversarial_training_on_regression_is_refused_with_a_sentence():
    with pytest.raises(ValueError, match=r"regression.*eps to 0\.$"):
        trainer_for(datasets.load("wave", n=100), adversarial_eps=0.1)


def test_adamw_decays_the_weights_apart_from_the_gradient():
    model = torch.nn.Linear(3, 1, bias=False)
    before = model.weight.detach().clone()
    optimizer = make_optimizer(model, TrainConfig(optimizer="adamw", lr=0.1, weight_decay=0.5))
    model.weight.grad = torch.zeros_like(model.weight)
    optimizer.step()
    assert torch.allclose(model.weight, before * (1 - 0.1 * 0.5))
