"""Passes over data in chunks planned from the one memory budget: a chunk holds as many samples
as one sample's measured activations allow within the budget (fewer for a bigger model or a
smaller budget), and the results do not depend on the chunk size (against one chunk of all)."""
import pytest
import torch
from torch import nn

from engine import levelset, memory, pruning

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (1, 8, 8)


def conv_net(channels, seed=0):
    """Conv -> BatchNorm -> ReLU -> Linear on 8x8 images; more channels, more activations per sample."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
                          nn.Flatten(), nn.Linear(channels * 64, 3)).double()
    with torch.no_grad():
        model(torch.rand(32, *SHAPE, dtype=torch.float64) * 3)  # running statistics off their defaults
    return model.eval()


def images(n, seed=1):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_rows_per_chunk_shrink_with_bigger_rows_and_a_smaller_limit():
    big_rows = memory.rows_per_chunk(4_000, 10_000, "cpu", limit=1e6)
    assert memory.rows_per_chunk(1_000, 10_000, "cpu", limit=1e6) == 1_000 > big_rows == 250
    assert memory.rows_per_chunk(4_000, 10_000, "cpu", limit=1e5) == 25


def test_rows_per_chunk_are_at_least_one_and_at_most_all():
    assert memory.rows_per_chunk(10**9, 100, "cpu", limit=1e3) == 1
    assert memory.rows_per_chunk(8, 100, "cpu", limit=1e9) == 100
    assert memory.rows_per_chunk(8, 100, "cpu") == 100  # the default budget holds 100 tiny rows


def test_a_level_set_pass_takes_fewer_rows_of_a_bigger_model_or_in_less_memory():
    rows = images(500).flatten(1)
    small, big = levelset.RowModel(conv_net(2), SHAPE), levelset.RowModel(conv_net(16), SHAPE)
    assert levelset.rows_per_pass(big, rows, 2e5) < levelset.rows_per_pass(small, rows, 2e5) < 500
    assert levelset.rows_per_pass(small, rows, 2e4) < levelset.rows_per_pass(small, rows, 2e5)
    assert levelset.rows_per_pass(small, rows) == 500  # the whole budget: one pass


def test_level_set_probabilities_do_not_depend_on_the_chunk():
    model, rows = levelset.RowModel(conv_net(4), SHAPE), images(300).flatten(1)
    assert levelset.rows_per_pass(model, rows, 2e4) < 30
    chunked = levelset.probabilities(model, rows, memory_limit=2e4)
    torch.testing.assert_close(chunked, levelset.probabilities(model, rows, chunk=len(rows)), rtol=1e-12, atol=0)


def test_a_gradient_pass_takes_fewer_samples_of_a_bigger_model_or_in_less_memory():
    x = images(500)
    small, big = conv_net(2), conv_net(16)
    assert pruning.gradient_rows(big, x, 4e5) < pruning.gradient_rows(small, x, 4e5) < 500
    assert pruning.gradient_rows(small, x, 4e4) < pruning.gradient_rows(small, x, 4e5)
    assert pruning.gradient_rows(small, x) == 500


def test_a_backward_pass_plans_for_more_memory_per_sample_than_a_forward_pass():
    model, x = conv_net(4), images(500)
    assert pruning.gradient_rows(model, x, 2e5) < levelset.rows_per_pass(model, x, 2e5)


def test_data_scores_do_not_depend_on_the_chunk():
    model, x = conv_net(4), images(200)
    y = torch.arange(200) % 3
    assert pruning.gradient_rows(model, x, 4e4) < 20
    chunked = pruning.scores(model, "taylor", x, y, memory_limit=4e4)
    whole = pruning.scores(model, "taylor", x, y)
    assert chunked.keys() == whole.keys()
    for name in whole:
        torch.testing.assert_close(chunked[name], whole[name], rtol=1e-10, atol=1e-14)
