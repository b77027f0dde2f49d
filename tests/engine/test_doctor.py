"""`python -m engine doctor`: the comparison of a device with the CPU, exercised CPU against CPU."""
import contextlib
import io

import numpy as np
import pytest
import torch

from engine import doctor
from engine.__main__ import main


@pytest.fixture(scope="module")
def quick_cpu_run(one_thread) -> tuple[int, str]:
    """(exit code, stdout) of `python -m engine doctor --device cpu --quick`, run once."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--quiet", "doctor", "--device", "cpu", "--quick"])
    return code, out.getvalue()


def test_cpu_against_a_copy_of_itself_passes_every_check(quick_cpu_run):
    code, out = quick_cpu_run
    assert code == 0
    assert "All checks pass." in out


def test_the_table_has_a_row_for_every_check(quick_cpu_run):
    _, out = quick_cpu_run
    rows = {line.split("  ")[0] for line in out.splitlines()}
    assert {check.name for check in doctor.CHECKS} <= rows


def test_every_lens_is_checked():
    names = " ".join(check.name for check in doctor.CHECKS)
    for part in ("trainer", "landscape", "hessian", "ntk full", "ntk trace", "ntk diagonal", "ntk pseudo",
                 "cka", "embedding", "level-set", "pruning", "twin", "ensemble"):
        assert part in names


def test_an_unavailable_device_exits_2_with_a_sentence(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["doctor", "--device", "cuda", "--quick"]) == 2
    assert "cuda is not available on this machine" in capsys.readouterr().err


def test_a_name_that_is_no_device_exits_2(capsys):
    assert main(["doctor", "--device", "abacus"]) == 2
    assert "'abacus' is not a device" in capsys.readouterr().err


# ---------------------------------------------------------------- the comparison


def test_difference_is_the_largest_gap_absolute_and_relative_to_the_largest_magnitude():
    reference = {"a": np.array([10.0, -20.0, 1.0]), "b": np.array([[2.0]])}
    other = {"a": np.array([10.5, -20.0, 1.0]), "b": np.array([[2.4]])}
    worst_abs, worst_rel = doctor.difference(reference, other)
    assert worst_abs == pytest.approx(0.5)
    assert worst_rel == pytest.approx(0.4 / 2.0)  # b's gap relative to b's size is the worst


def test_nans_in_the_same_places_agree_and_elsewhere_differ_infinitely():
    nan = float("nan")
    assert doctor.difference({"a": np.array([nan, 1.0])}, {"a": np.array([nan, 1.0])}) == (0.0, 0.0)
    assert doctor.difference({"a": np.array([nan, 1.0])}, {"a": np.array([1.0, 1.0])}) == (np.inf, np.inf)


def test_infinities_must_be_the_same_in_the_same_places():
    inf = float("inf")
    assert doctor.difference({"a": np.array([-inf, 1.0])}, {"a": np.array([-inf, 1.0])}) == (0.0, 0.0)
    assert doctor.difference({"a": np.array([-inf, 1.0])}, {"a": np.array([5.0, 1.0])}) == (inf, inf)
    assert doctor.difference({"a": np.array([-inf, 1.0])}, {"a": np.array([inf, 1.0])}) == (inf, inf)


def test_another_shape_or_a_missing_array_differs_infinitely():
    assert doctor.difference({"a": np.zeros(3)}, {"a": np.zeros(4)}) == (np.inf, np.inf)
    assert doctor.difference({"a": np.zeros(3)}, {}) == (np.inf, np.inf)


def test_a_check_beyond_its_tolerance_fails_and_the_command_exits_1(monkeypatch, capsys, one_thread):
    calls = iter([0.0, 1e-3])  # the CPU's result, then the "device's", off by 1e-3
    drifting = doctor.Check("drifting", lambda setup: {"value": np.array([1.0 + next(calls)])}, 1e-4, "a test")
    monkeypatch.setattr(doctor, "CHECKS", (drifting,))
    assert main(["--quiet", "doctor", "--device", "cpu", "--quick"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "1 check(s) failed: drifting." in out


def test_a_check_that_raises_on_the_device_is_reported_not_raised(one_thread):
    calls = iter([False, True])

    def breaks_the_second_time(setup):
        if next(calls):
            raise RuntimeError("Expected all tensors to be on the same device\nmore detail")
        return {"value": np.zeros(1)}

    report = doctor.run("cpu", quick=True, checks=(doctor.Check("broken", breaks_the_second_time, 1e-4, "a test"),))
    (outcome,) = report.outcomes
    assert not report.passed
    assert outcome.error == "RuntimeError: Expected all tensors to be on the same device"
    assert "broken: RuntimeError: Expected all tensors" in doctor.table(report)


def test_the_ratio_is_cpu_time_over_device_time():
    outcome = doctor.Outcome("x", 1e-4, "why", cpu_seconds=3.0, device_seconds=0.5)
    assert outcome.ratio == pytest.approx(6.0)


def test_the_device_side_works_on_copies_even_on_the_cpu(one_thread):
    reference = doctor.reference_setup(doctor.QUICK)
    copy = doctor.moved(reference, torch.device("cpu"))
    assert copy.model is not reference.model and copy.data.x_train is not reference.data.x_train
    assert torch.equal(copy.data.x_train, reference.data.x_train)
    assert all(torch.equal(a, b) for a, b in zip(copy.model.parameters(), reference.model.parameters()))


# ---------------------------------------------------------------- device-generic code, checked on the CPU
#
# No GPU runs these tests, so the paths a GPU takes are checked through what they have in common
# with dtypes (a tensor made without `device=`/`dtype=` from what it meets goes wrong in both ways)
# and by standing in for torch.cuda where the engine asks it something.


def in_float64(setup: doctor.Setup) -> doctor.Setup:
    data = setup.data
    data = doctor.dataclasses.replace(data, x_train=data.x_train.double(), x_test=data.x_test.double())
    return doctor.dataclasses.replace(setup, model=doctor.copy.deepcopy(setup.model).double(), data=data)


# Random directions are drawn in the weights' dtype, another stream for float64 (the same on
# every device, which is what the doctor compares).
DRAWN_IN_THE_WEIGHTS_DTYPE = ("landscape surface",)


def test_every_lens_computes_in_the_models_dtype(one_thread):
    """A float64 model and data through every check: no tensor made in float32 along the way
    meets them (that raises), and the results agree with float32's to its rounding."""
    setup = doctor.reference_setup(doctor.QUICK)
    for check in doctor.CHECKS:
        if check.name in DRAWN_IN_THE_WEIGHTS_DTYPE:
            continue
        _, relative = doctor.difference(check.compute(setup), check.compute(in_float64(setup)))
        assert relative < 1e-4, check.name


# The checks that build fresh models: `build` makes them in torch's default dtype, as nn.Linear does.
BUILDS_MODELS = ("trainer", "lazy kernel twin", "ensemble (phase diagram)")


def test_no_lens_makes_tensors_in_the_default_dtype(one_thread):
    """With torch's default dtype float64, a float32 model's results are bit for bit those with
    the default float32: every tensor a lens makes takes its dtype (and device) from its inputs."""
    setup = doctor.reference_setup(doctor.QUICK)
    checks = [c for c in doctor.CHECKS if c.name not in BUILDS_MODELS]
    expected = [c.compute(setup) for c in checks]
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got = [c.compute(setup) for c in checks]
    finally:
        torch.set_default_dtype(default)
    for check, a, b in zip(checks, expected, got):
        assert doctor.difference(a, b) == (0.0, 0.0), check.name


def test_pick_prefers_cuda(monkeypatch):
    from engine.device import pick
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick() == torch.device("cuda")


def test_a_gpus_budget_is_read_from_its_free_memory(monkeypatch):
    from engine import memory
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * 2**30, 80 * 2**30))
    assert memory.available_bytes("cuda") == 8 * 2**30
    assert memory.chunk_budget("cuda") == memory.budget("cuda")  # the whole budget, not a CPU chunk


def test_cuda_work_is_waited_for_before_the_clock_is_read(monkeypatch):
    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    doctor.synchronize(torch.device("cuda"))
    assert waited == [torch.device("cuda")]


def test_the_header_names_the_gpu_and_warns_of_tf32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100")
    torch.backends.cuda.matmul.allow_tf32 = True  # a property, not an attribute monkeypatch can restore
    try:
        notes = " ".join(doctor.notes(torch.device("cuda")))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
    assert "NVIDIA H100" in notes and "TF32" in notes
