from engine.__main__ import main
from engine.store import RunStore


def test_cli_trains_and_saves_a_run(tmp_path, capsys):
    code = main(["--store", str(tmp_path), "train", "data=moons", "train.steps=20", "model.width=8",
                 "--device", "cpu", "--name", "cli run"])
    assert code == 0
    assert [r.name for r in RunStore(tmp_path).list()] == ["cli run"]
    assert "Finished 20 steps." in capsys.readouterr().out


def test_cli_names_every_bad_setting(tmp_path, capsys):
    assert main(["--store", str(tmp_path), "train", "model.width=0", "train.lr=abc"]) == 2
    err = capsys.readouterr().err
    assert "model.width: Width must be" in err and "train.lr: 'abc' is not a number." in err


def test_lens_commands_write_results_that_viz_turns_into_html(tmp_path, capsys):
    from viz.__main__ import main as viz_main
    store = str(tmp_path / "runs")
    assert main(["--store", store, "train", "data=moons", "data.n=100", "train.steps=20", "model.width=4",
                 "--device", "cpu"]) == 0
    run_id = RunStore(store).list()[0].id
    assert main(["--store", store, "landscape", run_id, "--out", str(tmp_path), "resolution=5", "samples=50"]) == 0
    npz = tmp_path / f"landscape-surface-{run_id}.npz"
    assert npz.exists() and (tmp_path / f"landscape-surface-{run_id}.csv").exists()
    assert viz_main([str(npz)]) == 0
    assert "plotly" in npz.with_suffix(".html").read_text()[:100_000]


def test_lens_commands_name_their_settings_when_one_is_unknown(tmp_path):
    import pytest
    with pytest.raises(SystemExit, match="it takes: step, split"):
        main(["--store", str(tmp_path), "landscape", "some-run", "colour=red"])


def test_an_optional_setting_is_read_as_its_annotation_says():
    from engine import recipes
    from engine.__main__ import recipe_settings

    assert recipe_settings(recipes.ntk_spectrum, ["step=0"]) == {"step": 0}
    assert recipe_settings(recipes.embedding, ["layer=layers.act1"]) == {"layer": "layers.act1"}
