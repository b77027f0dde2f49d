"""Loss landscapes of conv nets with BatchNorm and residual blocks (Li et al. 2018's setting),
each checked against a plain reference: per-filter norms taken one filter at a time, and
surface points computed on a copy of the model whose weights are moved in place."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine import landscape

pytestmark = pytest.mark.usefixtures("one_thread")

XS, YS = np.array([-0.5, 0.0, 0.5, 1.0]), np.array([-0.25, 0.6])  # a non-square 2 x 4 grid


def bn_conv_net() -> nn.Module:
    """A small 2-D conv net with BatchNorm after each convolution."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 3))


class ResidualNet(nn.Module):
    """A residual block whose layers are attributes (not one nn.Sequential), with a 1x1
    projection on the skip, BatchNorm everywhere and a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(4)
        self.conv1 = nn.Conv2d(4, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.skip = nn.Conv2d(4, 8, 1, bias=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = F.relu(self.bn0(self.stem(x)))
        r = F.relu(self.bn1(self.conv1(h)))
        h = F.relu(self.bn2(self.conv2(r)) + self.skip(h))
        return self.head(h.mean(dim=(2, 3)))


def trained_statistics(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """`model` after a few forwards in train mode, so its running statistics are not the
    defaults (mean 0, variance 1) and differ from any one batch's; left in train mode."""
    model.train()
    with torch.no_grad():
        for k in range(3):
            model(x[k::3] * (1.0 + k) + 0.3)
    return model


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    x = torch.randn(30, 1, 8, 8)
    y = torch.randint(0, 3, (30,))
    return x, y


@pytest.fixture(params=["sequential", "residual"])
def model(request, data):
    torch.manual_seed(1)
    net = bn_conv_net() if request.param == "sequential" else ResidualNet()
    return trained_statistics(net, data[0])


def reference_point(model, d1, d2, a, b, x, y):
    """The loss at w + a d1 + b d2: a copy of the model moved there in place, run in eval mode."""
    moved = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, p in moved.named_parameters():
            p.add_(a * d1[name] + b * d2[name])
        return F.cross_entropy(moved(x), y).item()


def filter_norms(t: torch.Tensor) -> list[float]:
    """||t[i]|| for each output channel i, one filter at a time."""
    return [float(torch.sqrt((t[i].double() ** 2).sum())) for i in range(t.shape[0])]


# ---------------------------------------------------------------- directions


def test_each_conv_filter_of_the_direction_has_its_weights_filter_norm(model):
    weights, d = dict(model.named_parameters()), landscape.random_direction(model, seed=3)
    convs = [name for name, w in weights.items() if w.dim() == 4]
    assert convs
    for name in convs:
        np.testing.assert_allclose(filter_norms(d[name]), filter_norms(weights[name].detach()), rtol=1e-5)


def test_biasbn_leaves_batchnorm_and_biases_still(model):
    d = landscape.random_direction(model, ignore="biasbn")
    norm_layers = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    still = [name for name in d if name.rsplit(".", 1)[0] in norm_layers or name.endswith("bias")]
    assert still and all(torch.count_nonzero(d[name]) == 0 for name in still)


def test_without_ignore_batchnorm_parameters_move_with_the_weights(model):
    d = landscape.random_direction(model, ignore=None)
    bn = next(m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d))
    name = next(n for n, p in model.named_parameters() if p is bn.weight)
    assert torch.equal(d[name], bn.weight.detach())


def test_layer_norm_parameters_of_any_shape_stay_still_under_biasbn():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.LayerNorm([2, 4, 4]), nn.Flatten(), nn.Linear(32, 2))
    d = landscape.random_direction(model)
    assert model[1].weight.dim() == 3 and torch.count_nonzero(d["1.weight"]) == 0
    assert torch.count_nonzero(d["0.weight"]) == d["0.weight"].numel()


def test_model_normalization_gives_the_random_part_the_weights_norm(model):
    d = landscape.random_direction(model, norm="model", seed=5)
    drawn = [n for n, p in model.named_parameters() if p.dim() > 1]
    d_norm = sum(float((d[n].double() ** 2).sum()) for n in drawn) ** 0.5
    w_norm = sum(float((p.detach().double() ** 2).sum()) for n, p in model.named_parameters() if n in drawn) ** 0.5
    assert d_norm == pytest.approx(w_norm, rel=1e-6)


# ---------------------------------------------------------------- surfaces


def test_surface_matches_moving_a_copy_of_the_model_in_place(model, data):
    x, y = data
    d1 = landscape.random_direction(model, seed=0)
    d2 = landscape.random_direction(model, seed=1)
    result = landscape.surface(model, "ce", x, y, d1, d2, xs=XS, ys=YS)
    expected = [[reference_point(model, d1, d2, a, b, x, y) for a in XS] for b in YS]
    np.testing.assert_allclose(result.loss, expected, rtol=1e-4, atol=1e-6)


def test_surface_uses_running_statistics_and_says_so(model, data):
    """At the centre the loss is the eval-mode loss, which differs from the train-mode one
    (batch statistics) because the running statistics are not this batch's."""
    x, y = data
    d1 = landscape.random_direction(model)
    centre = landscape.surface(model, "ce", x, y, d1, xs=[0.0])
    with torch.no_grad():
        eval_loss = F.cross_entropy(copy.deepcopy(model).eval()(x), y).item()
        batch_loss = F.cross_entropy(copy.deepcopy(model).train()(x), y).item()
    assert centre.loss[0] == pytest.approx(eval_loss, rel=1e-5)
    assert abs(batch_loss - eval_loss) > 1e-3
    assert "running statistics" in centre.settings["mode"]


def test_surface_leaves_the_model_its_mode_weights_and_statistics(model, data):
    x, y = data
    before = copy.deepcopy(model.state_dict())
    d1 = landscape.random_direction(model)
    landscape.surface(model, "ce", x, y, d1, d1, xs=XS, ys=YS)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class ItemNet(nn.Module):
    """A net whose forward reads a value out of a tensor (.item()), which vmap cannot batch."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3, 3)

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
        return self.head(h) / max(1.0, h.abs().max().item())


def test_a_model_vmap_cannot_batch_is_evaluated_point_by_point(data):
    x, y = data
    torch.manual_seed(2)
    model = trained_statistics(ItemNet(), x)
    d1, d2 = landscape.random_direction(model, seed=0), landscape.random_direction(model, seed=1)
    result = landscape.surface(model, "ce", x, y, d1, d2, xs=XS, ys=YS)
    expected = [[reference_point(model, d1, d2, a, b, x, y) for a in XS] for b in YS]
    np.testing.assert_allclose(result.loss, expected, rtol=1e-4, atol=1e-6)
    assert result.settings["points_at_once"] == "one by one"
