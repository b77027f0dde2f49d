"""The one loss resolver: names against torch's own losses, "auto" by task, sentences for bad names."""
import pytest
import torch
import torch.nn.functional as F

from engine.losses import loss_for_task, loss_function, loss_name
from engine.train import make_loss

OUTPUT = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
LABELS = torch.tensor([0, 2, 1, 1, 0, 2])
TARGETS = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))


def test_ce_is_torchs_cross_entropy():
    assert loss_function("ce")(OUTPUT, LABELS) == F.cross_entropy(OUTPUT, LABELS)


def test_mse_on_real_targets_is_torchs_mse():
    assert loss_function("mse")(OUTPUT, TARGETS) == F.mse_loss(OUTPUT, TARGETS)


def test_mse_on_labels_regresses_one_hot_targets():
    one_hot = torch.eye(3)[LABELS]
    torch.testing.assert_close(loss_function("mse")(OUTPUT, LABELS), F.mse_loss(OUTPUT, one_hot))


def test_mse_matches_a_flat_target_to_a_single_output():
    output, target = torch.randn(5, 1), torch.randn(5)
    torch.testing.assert_close(loss_function("mse")(output, target), F.mse_loss(output[:, 0], target))


def test_a_function_comes_back_unchanged():
    def mine(output, target):
        return output.sum()
    assert loss_function(mine) is mine
    assert loss_function(mine, "regression") is mine
    assert loss_for_task(mine, "classification") is mine


@pytest.mark.parametrize("task, name", [("classification", "ce"), ("regression", "mse")])
def test_auto_follows_the_task(task, name):
    assert loss_for_task("auto", task) == name
    assert loss_function("auto", task) is loss_function(name)


@pytest.mark.parametrize("loss, task, sentence", [
    ("hinge", None, "must be 'ce', 'mse' or a function"),
    ("hinge", "classification", "must be one of auto, ce, mse"),
    ("auto", None, "chosen by the task"),
    ("ce", "regression", "Cross-entropy needs class labels"),
    ("auto", "ranking", "task must be 'classification' or 'regression'"),
])
def test_a_bad_loss_or_task_is_a_sentence(loss, task, sentence):
    with pytest.raises(ValueError, match=sentence):
        loss_function(loss, task)


def test_the_trainers_unscaled_loss_is_the_resolvers_function():
    assert make_loss("auto", "classification", 3) is F.cross_entropy


def test_the_trainers_loss_for_a_centered_model_is_divided_by_alpha_squared():
    scaled = make_loss("mse", "regression", 0, alpha=10.0)
    torch.testing.assert_close(scaled(OUTPUT, TARGETS), F.mse_loss(OUTPUT, TARGETS) / 100)


def test_loss_names_for_settings():
    assert loss_name("ce") == "ce"
    assert loss_name(F.mse_loss) == "mse_loss"
