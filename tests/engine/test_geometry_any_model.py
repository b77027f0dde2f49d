"""Geometry on a network the lab did not build: a small ResNet with BatchNorm written here the
way a researcher writes one (torchvision-style BasicBlocks, a ReLU reused inside each block),
looked at through forward hooks on any of its modules; and CKA across two imported runs."""
import textwrap

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from engine import external, geometry, recipes
from engine.experiment import load_model
from engine.store import RunStore

pytestmark = pytest.mark.usefixtures("one_thread")

RESNET_FILE = textwrap.dedent('''
    import torch
    from torch import nn


    class BasicBlock(nn.Module):
        """torchvision's block: one ReLU module used twice, a projection when the shape changes."""

        def __init__(self, channels_in, channels, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(channels_in, channels, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)
            self.downsample = None
            if stride != 1 or channels_in != channels:
                self.downsample = nn.Sequential(nn.Conv2d(channels_in, channels, 1, stride=stride, bias=False),
                                                nn.BatchNorm2d(channels))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)


    class SmallResNet(nn.Module):
        def __init__(self, width=4, classes=3):
            super().__init__()
            self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU()
            self.layer1 = BasicBlock(width, width)
            self.layer2 = BasicBlock(width, 2 * width, stride=2)
            self.fc = nn.Linear(2 * width, classes)

        def forward(self, x):
            h = self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))


    def make(width=4, classes=3):
        return SmallResNet(width, classes)
''')


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """The model file, two differently seeded trained states, and (N, 1, 8, 8) images."""
    folder = tmp_path_factory.mktemp("resnet")
    (folder / "small_resnet.py").write_text(RESNET_FILE)
    y = torch.arange(40) % 3
    x = torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(0)) + y.float().reshape(-1, 1, 1, 1)
    np.savez(folder / "images.npz", x_train=x[:32].numpy(), y_train=y[:32].numpy(),
             x_test=x[32:].numpy(), y_test=y[32:].numpy())
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = external.load_factory(f"{folder / 'small_resnet.py'}:make")()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(3):  # a few steps, so the BatchNorm statistics are the model's own
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[:32]), y[:32]).backward()
            optimizer.step()
        safetensors.torch.save_file(model.state_dict(), str(folder / f"seed{seed}.safetensors"))
    return folder


@pytest.fixture
def resnet(user_files):
    model = external.load_factory(f"{user_files / 'small_resnet.py'}:make")()
    model.load_state_dict(safetensors.torch.load_file(str(user_files / "seed0.safetensors")))
    return model


def manual_forward(model, x):
    """The same network evaluated by hand in eval mode, keeping the tensors the hooks should see."""
    model.eval()
    with torch.no_grad():
        stem_bn = model.bn1(model.conv1(x))
        block1 = model.layer1(model.relu(stem_bn))
        shortcut = model.layer2.downsample(block1)
        inner_bn = model.layer2.bn1(model.layer2.conv1(block1))
        block2 = model.layer2(block1)
    return {"bn1": stem_bn, "layer1": block1, "layer2.downsample": shortcut, "layer2.bn1": inner_bn,
            "layer2": block2}


def test_any_module_can_be_named_a_batchnorm_a_block_and_a_shortcut(resnet):
    names = geometry.module_names(resnet)
    assert names["bn1"] == "BatchNorm2d" and names["layer1"] == "BasicBlock"
    assert names["layer2.downsample"] == "Sequential" and "" not in names


def test_hooked_activations_equal_the_tensors_of_a_manual_forward(resnet):
    x = torch.randn(10, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    expected = manual_forward(resnet, x)
    hooked = geometry.activations(resnet.train(), x, list(expected), batch_size=4)
    for name, tensor in expected.items():
        torch.testing.assert_close(hooked[name], tensor.flatten(1))


def test_activations_run_the_batchnorm_on_its_running_statistics_and_restore_train_mode(resnet):
    x = torch.randn(6, 1, 8, 8)
    before = resnet.bn1.running_mean.clone()
    geometry.activations(resnet.train(), x, ["bn1"])
    assert resnet.training and torch.equal(resnet.bn1.running_mean, before)


def test_a_module_that_returns_a_tuple_gives_its_first_tensor():
    model = nn.Sequential(nn.Linear(3, 4))
    attention = nn.MultiheadAttention(4, 1, batch_first=True)
    x = torch.randn(5, 2, 3)

    class WithAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.attention = model, attention

        def forward(self, x):
            h = self.embed(x)
            return self.attention(h, h, h)[0].mean(1)

    net = WithAttention().eval()
    with torch.no_grad():
        h = model(x)
        expected = attention(h, h, h)[0]
    torch.testing.assert_close(geometry.activations(net, x, ["attention"])["attention"], expected.flatten(1))


def test_an_unknown_module_is_refused_naming_the_ones_there_are(resnet):
    with pytest.raises(ValueError, match="no module named 'layer9'.*layer1"):
        geometry.activations(resnet, torch.randn(2, 1, 8, 8), ["layer9"])


# ---------------------------------------------------------------- imported runs


@pytest.fixture(scope="module")
def two_runs(user_files, tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("store"))
    ids = [external.import_run(f"{user_files / 'small_resnet.py'}:make", user_files / f"seed{seed}.safetensors",
                               data=str(user_files / "images.npz"), store=store) for seed in (0, 1)]
    return store, ids


def test_cka_of_an_imported_run_with_itself_is_one_on_every_layer(two_runs):
    store, (first, _) = two_runs
    result = recipes.cross_run_similarity(None, store, first, other=first, samples=30)
    np.testing.assert_allclose(np.diag(result.values), 1.0, atol=1e-6)


def test_cka_across_two_imported_runs_compares_every_layer_with_every_layer(two_runs):
    store, (first, second) = two_runs
    result = recipes.cross_run_similarity(None, store, first, other=second, samples=30)
    layers = recipes.representation_layers(load_model(store, first))
    assert result.values.shape == (len(layers), len(layers))
    assert np.all((result.values > 0) & (result.values < 1 + 1e-9))


def test_units_of_any_module_are_matched_across_imported_runs(two_runs):
    store, (first, second) = two_runs
    result = recipes.matched_units(None, store, first, other=second, layer="layer1.bn2", samples=30)
    assert len(result.correlations) == 4 * 8 * 8


def test_units_of_what_the_readout_reads_are_matched_across_imported_runs(two_runs):
    store, (first, second) = two_runs
    result = recipes.matched_units(None, store, first, other=second, layer="input of fc", samples=30)
    assert len(result.correlations) == 8  # the pooled features of the last block's 2 x 4 channels


def test_channels_of_an_imported_resnet_go_inside_its_blocks_and_the_stem_is_said_unsafe(two_runs):
    store, (first, _) = two_runs
    result = recipes.channel_removal(None, store, first, sparsity=0.5)
    assert result.layers == ["layer1.conv1", "layer2.conv1"] and result.channels.tolist() == [[4, 2], [8, 4]]
    assert result.accuracy[1] == result.accuracy[2] and result.largest_difference < 1e-4
    assert "goes to 2 places" in result.unsafe["conv1"]  # the stem feeds layer1's shortcut too


def test_the_prune_command_removes_channels_of_an_imported_run_and_writes_their_table(two_runs, tmp_path):
    from engine.__main__ import main

    store, (first, _) = two_runs
    code = main(["--store", str(store.root), "prune", first, "--what", "channels", "--out", str(tmp_path),
                 "sparsity=0.5"])
    assert code == 0 and (tmp_path / f"prune-channels-{first}.npz").exists()
    table = (tmp_path / f"prune-channels-{first}.csv").read_text().splitlines()
    assert table[0].split(",") == ["layer", "channels[before]", "channels[after]"] and len(table) == 3
