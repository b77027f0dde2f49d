"""Small synthetic results, made with numpy, for the viz tests (imported as `viz_samples`)."""
import numpy as np
import plotly.io as pio

from engine.results import Confusion, DecisionRegions, FunctionFit, History, Parity


def make_history(n_steps=100, eval_every=10, regression=False):
    """A history whose loss falls and accuracy rises; accuracies are NaN for regression."""
    steps = np.arange(1, n_steps + 1)
    eval_steps = np.arange(0, n_steps + 1, eval_every)
    falling = np.exp(-eval_steps / n_steps)
    accuracy = np.full(len(eval_steps), np.nan) if regression else 1 - 0.5 * falling
    return History(
        step=steps.tolist(), train_loss=np.exp(-steps / n_steps).tolist(),
        eval_step=eval_steps.tolist(), eval_train_loss=falling.tolist(),
        eval_train_accuracy=accuracy.tolist(), test_loss=(falling + 0.1).tolist(),
        test_accuracy=accuracy.tolist(),
    )


def make_regions(n_classes=2, grid=(30, 40), n_points=50, task="classification", seed=0):
    """Predictions over a (Gy, Gx) grid: the class is the angle's sector around the origin."""
    rng = np.random.default_rng(seed)
    grid_y, grid_x = np.linspace(-1, 1, grid[0]), np.linspace(-2, 2, grid[1])
    xx, yy = np.meshgrid(grid_x, grid_y)
    points = rng.uniform(-1, 1, size=(n_points, 2))
    if task == "regression":
        return DecisionRegions(grid_x, grid_y, xx * yy, np.ones_like(xx), points,
                               points[:, 0] * points[:, 1], "regression", 0)

    def sector(x, y):
        return ((np.arctan2(y, x) + np.pi) / (2 * np.pi) * n_classes).astype(int) % n_classes

    return DecisionRegions(grid_x, grid_y, sector(xx, yy), rng.uniform(0, 1, xx.shape), points,
                           sector(points[:, 0], points[:, 1]), "classification", n_classes)


def make_fit(target=True, n=50):
    x = np.linspace(-1, 1, 200)
    points_x = np.linspace(-1, 1, n)
    return FunctionFit(x, np.sin(3 * x) * 0.9, np.sin(3 * x) if target else None,
                       points_x, np.sin(3 * points_x), "x")


def make_confusion(matrix=((5, 1), (2, 7))):
    matrix = np.asarray(matrix)
    return Confusion(matrix, [f"c{k}" for k in range(len(matrix))])


def make_parity(n=100, seed=0):
    target = np.random.default_rng(seed).normal(size=n)
    return Parity(target, 0.9 * target)


def assert_valid(fig):
    """Check that a figure serialises: `fig.to_dict()` and `plotly.io.to_json(fig)` work."""
    fig.to_dict()
    pio.to_json(fig)
    return fig
