import csv
import inspect
import io

import numpy as np
import pytest

from engine import recipes
from engine.__main__ import FREE_TEXT, LENSES, allowed, main, read_settings, recipe_settings
from engine.store import RunStore


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[str, str]:
    """(the run store, the id of a tiny trained run in it)."""
    store = str(tmp_path_factory.mktemp("runs"))
    assert main(["--store", store, "--quiet", "train", "data=moons", "data.n=100", "train.steps=20",
                 "model.width=4", "--device", "cpu"]) == 0
    return store, RunStore(store).list()[0].id


def lens(trained, tmp_path, *args) -> int:
    """Run a lens command on the tiny run, writing into tmp_path."""
    store, run_id = trained
    command, *rest = args
    return main(["--store", store, command, run_id, "--out", str(tmp_path), *rest])


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


@pytest.mark.parametrize("args, sentence", [
    (["model.width=abc"], "model.width: 'abc' is not a whole number."),
    (["width=4"], "width: 'width' is not a setting of this lab."),
    (["steps"], "steps: Settings are key=value pairs; 'steps' has no '='."),
    (["--device", "toaster"], "--device: 'toaster' is not a device"),
])
def test_train_refuses_a_bad_setting_with_a_sentence_and_exit_2(tmp_path, capsys, args, sentence):
    assert main(["--store", str(tmp_path), "train", *args]) == 2
    assert sentence in capsys.readouterr().err
    assert RunStore(tmp_path).list() == []


def test_lens_commands_write_results_that_viz_turns_into_html(trained, tmp_path, capsys):
    from viz.__main__ import main as viz_main
    assert lens(trained, tmp_path, "landscape", "resolution=5", "samples=50") == 0
    npz = tmp_path / f"landscape-surface-{trained[1]}.npz"
    assert npz.exists() and (tmp_path / f"landscape-surface-{trained[1]}.csv").exists()
    assert viz_main([str(npz)]) == 0
    assert "plotly" in npz.with_suffix(".html").read_text()[:100_000]


# ---------------------------------------------------------------- settings checked before work


@pytest.mark.parametrize("args, key, says", [
    (["landscape", "resolution=abc"], "resolution",
     "'abc' is not a whole number; resolution takes a whole number of at least 2."),
    (["landscape", "span=wide"], "span", "'wide' is not a number; span takes a number above 0."),
    (["ntk", "--what", "eigenfunctions", "k=zero"], "k", "k takes a whole number of at least 1."),
    (["landscape", "resolution=-3"], "resolution", "'-3' is not allowed; resolution takes a whole number of at least 2."),
    (["landscape", "span=0"], "span", "span takes a number above 0."),
    (["landscape", "span=inf"], "span", "span takes a number above 0."),
    (["ntk", "--what", "eigenfunctions", "k=0"], "k", "k takes a whole number of at least 1."),
    (["prune", "methods=magnitude,foo"], "methods",
     "'foo' is not allowed; methods takes a comma-separated list, each one of: random, magnitude"),
    (["prune", "sparsities=0.5,1"], "sparsities", "each a number from 0 up to, but not including, 1."),
    (["prune", "sparsities=-0.1"], "sparsities", "each a number from 0 up to, but not including, 1."),
    (["prune", "--what", "masks", "scope=local"], "scope", "scope takes one of: global, layer."),
    (["geometry", "method=tsne"], "method", "method takes one of: pca, umap."),
    (["geometry", "dim=4"], "dim", "dim takes one of: 2, 3."),
    (["levelset", "--what", "triangle", "threshold=2"], "threshold", "threshold takes a number from 0 to 1."),
    (["prune", "--what", "lottery", "rate=1"], "rate", "rate takes a number between 0 and 1, both excluded."),
    (["landscape", "--what", "density", "split=validation"], "split", "split takes one of: train, test."),
])
def test_a_setting_that_is_not_allowed_is_named_with_what_it_takes_before_any_work(trained, tmp_path, capsys,
                                                                                      args, key, says):
    assert lens(trained, tmp_path, *args) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"{key}: ") and says in err and len(err.splitlines()) == 1
    assert out == "" and list(tmp_path.iterdir()) == []


def test_lens_commands_name_their_settings_when_one_is_unknown(trained, tmp_path, capsys):
    assert lens(trained, tmp_path, "landscape", "colour=red") == 2
    assert "colour: 'colour' is not a setting of this analysis; it takes: step, split" in capsys.readouterr().err


def test_a_setting_the_analysis_needs_is_asked_for(trained, tmp_path, capsys):
    assert lens(trained, tmp_path, "landscape", "--what", "interpolation") == 2
    assert "other: This analysis needs other=..." in capsys.readouterr().err


@pytest.mark.parametrize("args", [["landscape", "--what", "interpolation", "other=nosuchrun"],
                                  ["geometry", "--what", "cross-cka", "other=../elsewhere"]])
def test_a_run_that_is_not_in_the_store_is_named(trained, tmp_path, capsys, args):
    assert lens(trained, tmp_path, *args) == 2
    assert f"other: No run '{args[-1][6:]}' in the run store" in capsys.readouterr().err


def test_an_unknown_run_is_named(tmp_path, capsys):
    assert main(["--store", str(tmp_path), "landscape", "nosuchrun"]) == 2
    assert "run: No run 'nosuchrun' in the run store" in capsys.readouterr().err


def test_every_number_and_choice_of_every_analysis_has_its_allowed_values():
    for command, kinds in LENSES.items():
        for what, recipe in kinds.items():
            for key, setting in recipe_settings(recipe).items():
                if key not in FREE_TEXT and not isinstance(setting.default, bool):
                    assert allowed(command, key) is not None, f"{command} --what {what}: {key}"


def test_every_default_is_allowed():
    for command, kinds in LENSES.items():
        for recipe in kinds.values():
            for key, setting in recipe_settings(recipe).items():
                rule = allowed(command, key)
                if rule and setting.default not in (None, inspect.Parameter.empty):
                    assert rule.test(setting.default), f"{command}: {key}={setting.default}"


def test_an_optional_setting_is_read_as_its_annotation_says():
    assert read_settings("ntk", recipes.ntk_spectrum, ["step=0"]) == ({"step": 0}, {})
    assert read_settings("geometry", recipes.embedding, ["layer=layers.act1"]) == ({"layer": "layers.act1"}, {})
    assert read_settings("landscape", recipes.random_plane_surface, ["samples=none"]) == ({"samples": None}, {})


def test_settings_passed_on_to_another_recipe_are_read_as_its_own():
    assert read_settings("levelset", recipes.levelset_triangle, ["steps=5", "resolution=4"]) == (
        {"steps": 5, "resolution": 4}, {})


# ---------------------------------------------------------------- progress on stderr, results on stdout


def test_a_lens_shows_its_progress_on_stderr_and_its_files_on_stdout(trained, tmp_path, capsys):
    assert lens(trained, tmp_path, "landscape", "resolution=4", "samples=30") == 0
    out, err = capsys.readouterr()
    assert f"Computing the landscape surface of run {trained[1]}" in err and "landscape surface: 100%" in err
    assert out.splitlines() == [f"Wrote {tmp_path / f'landscape-surface-{trained[1]}'}{s}" for s in (".npz", ".csv")]


def test_a_result_in_the_run_store_is_said_to_be_there(trained, tmp_path, capsys):
    assert lens(trained, tmp_path, "landscape", "resolution=3", "samples=20") == 0
    capsys.readouterr()
    assert lens(trained, tmp_path, "landscape", "resolution=3", "samples=20") == 0
    assert "with these settings is in the run store" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["after the command", "before the command"])
def test_quiet_silences_a_lens_progress(trained, tmp_path, capsys, where):
    store, run_id = trained
    args = ["landscape", run_id, "--out", str(tmp_path), "resolution=4", "samples=40"]
    argv = ["--store", store, *args, "--quiet"] if where == "after the command" else ["--store", store, "--quiet", *args]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.count("Wrote") == 2


def test_training_shows_its_progress_on_stderr_unless_quiet(tmp_path, capsys):
    settings = ["data=moons", "data.n=100", "train.steps=10", "model.width=4", "--device", "cpu", "--no-save"]
    assert main(["train", *settings]) == 0
    out, err = capsys.readouterr()
    assert "Preparing the data and the model" in err and "Finished 10 steps." in out and "Preparing" not in out
    assert main(["train", *settings, "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "Finished 10 steps." in out


# ---------------------------------------------------------------- whole tables


def test_the_pruning_sweeps_csv_holds_every_methods_accuracy_and_loss(trained, tmp_path, capsys):
    assert lens(trained, tmp_path, "prune", "methods=magnitude,random", "sparsities=0.5,0.9", "--quiet") == 0
    stem = tmp_path / f"prune-sweep-{trained[1]}"
    rows = list(csv.DictReader(io.StringIO(stem.with_suffix(".csv").read_text())))
    saved = np.load(stem.with_suffix(".npz"), allow_pickle=False)
    assert [(r["method"], float(r["sparsity"])) for r in rows] == [
        (m, s) for m in ("magnitude", "random") for s in (0.5, 0.9)]
    assert np.allclose([float(r["accuracy"]) for r in rows], saved["accuracy"].ravel(), rtol=1e-8)
    assert np.allclose([float(r["loss"]) for r in rows], saved["loss"].ravel(), rtol=1e-8)


def test_a_setting_that_depends_on_the_run_is_refused_with_a_sentence(trained, tmp_path, capsys):
    assert lens(trained, tmp_path, "levelset", "--what", "map", "class_index=7") == 2
    assert "class_index is a class of this run's data: from 0 to 1." in capsys.readouterr().err
