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
