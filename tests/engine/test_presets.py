import pytest

from engine import data as datasets
from engine import presets
from engine.models import build


@pytest.mark.parametrize("preset", presets.all_presets(), ids=lambda p: p.key)
def test_every_preset_builds_its_runs(preset):
    for run in preset.runs:
        e = run.experiment
        dataset = datasets.load(e.data, **e.data_options)
        assert build(e.model, dataset.input_shape, dataset.n_outputs) is not None


def test_a_preset_with_a_bad_setting_is_refused_with_its_name(tmp_path):
    (tmp_path / "bad.json").write_text(
        '{"title": "t", "lens": "landscape", "description": "d", '
        '"runs": [{"name": "r", "settings": {"model.width": "0"}}]}')
    with pytest.raises(ValueError, match="bad.json, run 'r': Width"):
        presets.all_presets(tmp_path)


def test_every_lens_page_has_a_preset():
    assert {"landscape", "ntk", "geometry"} <= {p.lens for p in presets.all_presets()}


def test_the_lazy_lesson_has_its_steps_in_order():
    steps = presets.lesson("lazy-rich")
    assert [s.lesson[1] for s in steps] == list(range(1, len(steps) + 1)) and len(steps) >= 4
    assert all(s.watch and s.knob for s in steps)


def test_a_lesson_knob_sets_only_the_last_run():
    step = presets.lesson("lazy-rich")[0]
    runs = step.with_knob("100")
    assert runs[-1].experiment.model.alpha == 100.0
    assert [r.experiment for r in runs[:-1]] == [r.experiment for r in step.runs[:-1]]


def test_a_knob_names_its_setting_once():
    steps = presets.lesson("lazy-rich")
    assert step_named(steps, "lazy-1-output-scale").with_knob("10")[-1].name == "alpha 10"
    assert step_named(steps, "lazy-3-parametrization").with_knob("meanfield")[-1].name == "meanfield"


def step_named(steps, key):
    return next(s for s in steps if s.key == key)


@pytest.mark.parametrize("key", ["resnet-skip-connections", "resnet56-skip-connections"])
def test_the_resnet_skip_preset_differs_only_in_the_shortcuts(key):
    """Li et al. 2018's contrast: the same ResNet with and without skip connections."""
    preset = next(p for p in presets.all_presets() if p.key == key)
    assert preset.lens == "landscape" and len(preset.runs) == 2
    skip, noskip = (run.experiment.to_flat() for run in preset.runs)
    assert (skip.pop("model.kind"), noskip.pop("model.kind")) == ("resnet", "resnet-noskip")
    assert skip == noskip and skip["data"] in ("digits", "mnist1d")
