"""One memory budget: what is free, the chunk planner within a given budget, sentences for
computations that would not fit (budgets given as arguments, never by faking the system)."""
import pytest
import torch

from engine import hessian, landscape, memory


def test_the_host_has_some_memory_available():
    assert memory.available_bytes("cpu") > 0


def test_a_budget_is_a_share_of_the_free_memory():
    assert 0 < memory.budget("cpu", share=0.01) <= memory.budget("cpu", share=1.0)


def test_a_share_outside_zero_to_one_is_a_sentence():
    with pytest.raises(ValueError, match="share of free memory must be in"):
        memory.budget("cpu", share=1.5)


def test_a_cpu_chunk_is_cache_sized():
    assert memory.chunk_budget("cpu") <= memory.CPU_CACHE_CHUNK_BYTES
    assert memory.chunk_budget("cpu", cpu_bytes=5_000) == 5_000


@pytest.mark.parametrize("budget", [10_000, 100_000, 1_000_000])
def test_the_planner_keeps_a_chunk_within_the_budget(budget):
    points, batch = landscape.plan_chunks(n_points=500, n_samples=1000, point_bytes=400,
                                          sample_bytes=30, budget=budget)
    assert points * (400 + batch * 30) <= budget
    assert 1 <= batch <= 1000 and 1 <= points <= 500


def test_the_planner_halves_the_batch_until_one_point_fits():
    _, batch = landscape.plan_chunks(n_points=1, n_samples=1000, point_bytes=0, sample_bytes=1,
                                     budget=300)
    assert batch == 250  # 1000 -> 500 -> 250


def test_a_computation_within_its_limit_passes():
    memory.check_fits(1000, "cpu", "A small thing", limit=1000)


def test_a_computation_over_its_limit_is_a_sentence_with_sizes_and_advice():
    with pytest.raises(ValueError) as refused:
        memory.check_fits(32 * 2**30, "cpu", "The NTK of 20,000 samples x 10 outputs",
                          "use fewer samples or kind='trace'", limit=11 * 2**30)
    assert str(refused.value) == ("The NTK of 20,000 samples x 10 outputs needs 32 GiB; it may use "
                                  "11 GiB: use fewer samples or kind='trace'.")


def test_without_a_limit_the_sentence_says_what_is_free():
    with pytest.raises(ValueError, match=r"needs .* TiB; this machine has .* free on the cpu, of which"):
        memory.check_fits(2**60, "cpu", "Something huge")


@pytest.mark.parametrize("n_bytes, text", [(512, "512 bytes"), (1536, "1.5 KiB"), (12 * 2**20, "12 MiB"),
                                           (32 * 2**30, "32 GiB"), (1234 * 2**30, "1.2 TiB")])
def test_sizes_are_described_in_binary_units(n_bytes, text):
    assert memory.describe(n_bytes) == text


def test_a_hessian_product_that_cannot_fit_is_refused_with_a_sentence():
    model = torch.nn.Linear(100, 10)
    x, y = torch.randn(8, 100), torch.randint(0, 10, (8,))
    with pytest.raises(ValueError, match="A Hessian-vector product of 1,010 parameters on one sample needs"):
        hessian.hvp_function(model, "ce", x, y, memory_limit=1_000)
