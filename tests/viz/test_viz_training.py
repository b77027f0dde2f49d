"""Training curves of one run and comparisons of several."""
import numpy as np
import pytest
from viz_samples import assert_valid, make_history

from engine.results import History
from viz.style import SPLIT_COLORS, UIREVISION, class_color
from viz.training import MAX_EVAL_POINTS, MAX_LINE_POINTS, block_means, compare_curves, training_curves


def test_training_curves_is_valid_with_five_traces():
    fig = assert_valid(training_curves(make_history()))
    assert len(fig.data) == 5


def test_training_curves_sets_uirevision():
    assert training_curves(make_history()).layout.uirevision == UIREVISION


def test_loss_axis_is_log_by_default():
    assert training_curves(make_history()).layout.yaxis.type == "log"


def test_loss_axis_linear_on_request():
    assert training_curves(make_history(), log_y=False).layout.yaxis.type == "linear"


def test_accuracy_panel_shows_train_and_test_accuracy():
    fig = training_curves(make_history())
    on_accuracy = [t for t in fig.data if t.xaxis == "x2"]
    assert [t.line.color for t in on_accuracy] == [SPLIT_COLORS["train"], SPLIT_COLORS["test"]]


def test_regression_history_shows_only_the_loss_panel():
    fig = assert_valid(training_curves(make_history(regression=True)))
    assert "xaxis2" not in fig.to_dict()["layout"]


def test_empty_history_says_no_data_yet():
    fig = assert_valid(training_curves(History()))
    assert fig.layout.annotations[0].text == "no data yet"


def test_long_minibatch_loss_is_thinned():
    fig = training_curves(make_history(n_steps=10_000, eval_every=1000))
    assert len(fig.data[0].y) <= MAX_LINE_POINTS


def test_a_few_evaluations_each_get_a_marker():
    fig = training_curves(make_history(n_steps=100, eval_every=10))
    assert [t.mode for t in fig.data[1:]] == ["lines+markers"] * 4 and len(fig.data[2].y) == 11


def test_many_evaluations_are_thinned_to_block_means_drawn_as_lines():
    """An endless run evaluated every 10 steps: 5,001 evaluations become at most MAX_EVAL_POINTS
    block means, the last block ending at the newest evaluation."""
    history = make_history(n_steps=50_000, eval_every=10)
    fig = training_curves(history)
    for trace in fig.data[1:]:
        assert len(trace.y) <= MAX_EVAL_POINTS and trace.mode == "lines"
    block = int(np.ceil(len(history.test_loss) / MAX_EVAL_POINTS))
    assert fig.data[2].y[0] == pytest.approx(np.mean(history.test_loss[:block]))
    assert fig.data[2].x[-1] > history.eval_step[-1] - block * 10


def test_compare_curves_thins_evaluations_the_same_way():
    fig = compare_curves({"long": make_history(n_steps=50_000, eval_every=10)}, "test_accuracy")
    assert len(fig.data[0].y) <= MAX_EVAL_POINTS and fig.data[0].mode == "lines"


def test_block_means_average_consecutive_blocks():
    steps, values = block_means(np.arange(6.0), np.array([1.0, 3, 5, 7, 9, 11]), max_points=3)
    assert steps.tolist() == [0.5, 2.5, 4.5] and values.tolist() == [2.0, 6.0, 10.0]


def test_block_means_keep_a_short_series():
    steps, values = block_means(np.arange(3.0), np.ones(3))
    assert len(values) == 3


def test_unequal_lengths_during_a_live_run_are_cut_to_the_shorter():
    history = make_history()
    history.test_loss.pop()
    fig = assert_valid(training_curves(history))
    assert len(fig.data[2].x) == len(fig.data[2].y)


def test_compare_curves_draws_one_coloured_trace_per_run():
    runs = {name: make_history() for name in ["a", "b", "c"]}
    fig = assert_valid(compare_curves(runs, "test_loss"))
    assert [(t.name, t.line.color) for t in fig.data] == [(n, class_color(i)) for i, n in enumerate("abc")]


@pytest.mark.parametrize("metric", ["train_loss", "eval_train_loss", "test_accuracy", "eval_train_accuracy"])
def test_compare_curves_accepts_every_metric(metric):
    assert_valid(compare_curves({"a": make_history(), "b": make_history()}, metric))


def test_compare_curves_uses_linear_axis_for_accuracy():
    assert compare_curves({"a": make_history()}, "test_accuracy").layout.yaxis.type == "linear"


def test_compare_curves_rejects_an_unknown_metric():
    with pytest.raises(ValueError):
        compare_curves({"a": make_history()}, "f1")


def test_compare_curves_of_empty_histories_says_no_data_yet():
    fig = assert_valid(compare_curves({"a": History()}))
    assert fig.layout.annotations[0].text == "no data yet"
