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
