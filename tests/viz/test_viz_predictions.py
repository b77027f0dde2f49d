"""Decision regions, function fits, confusion matrices, parity plots and the dispatcher."""

import numpy as np
import plotly.graph_objects as go
import pytest
from viz_samples import (
    assert_valid,
    make_confusion,
    make_fit,
    make_history,
    make_parity,
    make_regions,
)

from viz.predictions import (
    confusion_matrix,
    decision_regions,
    function_fit,
    parity,
    prediction_figure,
    region_image,
)
from viz.style import UIREVISION, class_color

# ---- decision regions


def test_decision_regions_is_an_image_and_one_scatter_per_class():
    fig = assert_valid(decision_regions(make_regions(n_classes=3)))
    assert [t.type for t in fig.data] == ["image", "scatter", "scatter", "scatter"]


def test_region_image_matches_the_grid():
    view = make_regions(grid=(30, 40))
    assert decision_regions(view).data[0].z.shape == (30, 40, 3)


def test_point_colours_follow_the_class_palette():
    fig = decision_regions(make_regions(n_classes=4))
    assert [t.marker.color for t in fig.data[1:]] == [class_color(k) for k in range(4)]


def test_points_of_each_class_are_in_its_trace():
    view = make_regions(n_classes=3)
    fig = decision_regions(view)
    assert len(fig.data[2].x) == np.sum(view.labels == 1)


def test_a_confident_cell_is_darker_than_an_unsure_one():
    image = region_image(np.zeros((1, 2), int), np.array([[1.0, 0.5]]), n_classes=2)
    assert image[0, 0].sum() < image[0, 1].sum()


def test_an_unsure_cell_keeps_a_hint_of_its_class_colour():
    image = region_image(np.ones((1, 1), int), np.array([[0.5]]), n_classes=2)
    assert image[0, 0].tolist() != [255, 255, 255]


def test_decision_regions_has_equal_aspect():
    assert decision_regions(make_regions()).layout.yaxis.scaleanchor == "x"


def test_y_axis_points_up_over_the_image():
    fig = decision_regions(make_regions())
    assert fig.layout.yaxis.range[0] < fig.layout.yaxis.range[1]


def test_decision_regions_with_a_single_class():
    fig = assert_valid(decision_regions(make_regions(n_classes=1)))
    assert len(fig.data) == 2


def test_decision_regions_with_ten_classes():
    fig = assert_valid(decision_regions(make_regions(n_classes=10, n_points=200)))
    assert len({t.marker.color for t in fig.data[1:]}) == 10


def test_many_points_use_webgl():
    fig = decision_regions(make_regions(n_points=3000))
    assert fig.data[1].type == "scattergl"


def test_regression_regions_are_a_heatmap_with_points_on_the_same_scale():
    fig = assert_valid(decision_regions(make_regions(task="regression")))
    assert [t.type for t in fig.data] == ["heatmap", "scatter"]
    assert fig.data[0].coloraxis == fig.data[1].marker.coloraxis == "coloraxis"


def test_regression_heatmap_matches_the_grid():
    fig = decision_regions(make_regions(task="regression", grid=(30, 40)))
    assert np.shape(fig.data[0].z) == (30, 40)


def test_regression_of_both_signs_is_centred_on_zero():
    fig = decision_regions(make_regions(task="regression"))
    assert fig.layout.coloraxis.cmid == 0


def test_decision_regions_draw_a_100_grid_and_2000_points():
    view = make_regions(n_classes=3, grid=(100, 100), n_points=2000)
    assert_valid(decision_regions(view))


# ---- function fit


def test_function_fit_draws_the_target_over_the_prediction_and_points():
    fig = assert_valid(function_fit(make_fit()))
    assert [t.name for t in fig.data] == ["prediction", "data", "target"]


def test_function_fit_target_is_dashed():
    assert function_fit(make_fit()).data[-1].line.dash == "dash"


def test_function_fit_target_stays_over_webgl_points():
    assert {t.type for t in function_fit(make_fit(n=3000)).data[1:]} == {"scattergl"}


def test_function_fit_without_target_leaves_it_out():
    fig = assert_valid(function_fit(make_fit(target=False)))
    assert [t.name for t in fig.data] == ["prediction", "data"]


# ---- confusion matrix


def test_confusion_matrix_is_an_annotated_heatmap_of_the_counts():
    fig = assert_valid(confusion_matrix(make_confusion()))
    assert np.array_equal(fig.data[0].z, [[5, 1], [2, 7]]) and fig.data[0].texttemplate == "%{z}"


def test_confusion_matrix_title_has_the_accuracy():
    assert "accuracy 80.0%" in confusion_matrix(make_confusion()).layout.title.text


def test_confusion_matrix_puts_the_first_true_class_on_top():
    assert confusion_matrix(make_confusion()).layout.yaxis.autorange == "reversed"


def test_confusion_matrix_of_ten_classes():
    fig = assert_valid(confusion_matrix(make_confusion(np.eye(10, dtype=int) * 3)))
    assert "accuracy 100.0%" in fig.layout.title.text


def test_empty_confusion_matrix_has_no_accuracy():
    fig = assert_valid(confusion_matrix(make_confusion(np.zeros((2, 2), int))))
    assert "accuracy n/a" in fig.layout.title.text


# ---- parity


def test_parity_draws_the_identity_line_over_the_points():
    fig = assert_valid(parity(make_parity()))
    assert [t.name for t in fig.data] == ["test points", "y = x"]


def test_parity_title_has_r_squared():
    assert "R² = 0.990" in parity(make_parity()).layout.title.text


def test_parity_of_many_points_uses_webgl():
    assert [t.type for t in parity(make_parity(n=3000)).data] == ["scattergl", "scattergl"]


def test_parity_of_no_points_is_valid():
    fig = assert_valid(parity(make_parity(n=0)))
    assert "R² n/a" in fig.layout.title.text


# ---- dispatch and shared settings

VIEWS = [make_regions(), make_regions(task="regression"), make_fit(), make_confusion(), make_parity()]


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: type(v).__name__)
def test_prediction_figure_builds_every_view_with_uirevision(view):
    fig = assert_valid(prediction_figure(view))
    assert isinstance(fig, go.Figure) and fig.layout.uirevision == UIREVISION


def test_prediction_figure_passes_the_title():
    assert prediction_figure(make_fit(), title="fit").layout.title.text == "fit"


def test_prediction_figure_rejects_other_results():
    with pytest.raises(TypeError):
        prediction_figure(make_history())
