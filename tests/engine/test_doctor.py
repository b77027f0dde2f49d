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
