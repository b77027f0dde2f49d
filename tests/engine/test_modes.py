"""engine.modes.evaluating: eval mode inside the block, each submodule's own mode after it."""
import pytest
from torch import nn

from engine.modes import evaluating


def mixed_model() -> nn.Sequential:
    """A network in train mode whose batch-norm alone is frozen in eval mode."""
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Dropout(0.5)).train()
    model[1].eval()
    return model


def modes_of(model: nn.Module) -> list[bool]:
    return [module.training for module in model.modules()]


def test_every_submodule_is_in_eval_mode_inside_the_block():
    model = mixed_model()
    with evaluating(model):
        assert not any(modes_of(model))


def test_each_submodule_gets_its_own_mode_back():
    model = mixed_model()
    before = modes_of(model)
    with evaluating(model):
        pass
    assert modes_of(model) == before == [True, True, False, True]


def test_modes_come_back_when_the_block_raises():
    model = mixed_model()
    before = modes_of(model)
    with pytest.raises(RuntimeError), evaluating(model):
        raise RuntimeError("the body failed")
    assert modes_of(model) == before
