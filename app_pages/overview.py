"""Overview: every lens side by side on one run (or two), live while it trains.

Each panel is one analysis of `engine.recipes` at the chosen checkpoint, computed as its own
job and kept in the run store, cheap panels first. While a run trains, the page follows its
newest checkpoint: a panel shows its newest finished picture while the next is computed,
and the panels' jobs run one at a time within a fixed share of the time, so they never queue
up behind each other and the training keeps most of the CPU.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import streamlit as st

from app_pages.lab import (
    NTK_SPECTRUM,
    error_sentence,
    history_version,
    jobs,
    kept_figure,
    owner,
    prediction_at,
    steady,
    store,
    training_of_run,
)
from engine import recipes
from engine.experiment import load_watched
from engine.status import Status
from viz import geometry as geometry_figures
from viz import landscape as landscape_figures
from viz import lazy as lazy_figures
from viz import levelset as levelset_figures
from viz import ntk as ntk_figures
from viz import pruning as pruning_figures
from viz.predictions import prediction_figure
from viz.report import overview_html
from viz.training import training_curves

LIVE_SHARE = 0.15  # while a run trains, the panels' jobs take at most about this share of the time
LIVE_POLL_S = 5.0  # how often the page looks for new checkpoints (each look redraws every panel)
HEIGHT = 320
GRID_KEY = "overview-grid"  # a `steady` container: a panel keeps its picture until a newer one replaces it


@dataclass
class Panel:
    """One compact picture of a run at a checkpoint.

    Attributes:
        key: the cache name of its analysis (see `engine.analysis`).
        title: what it shows.
        page: the lens page it opens, with the same run and checkpoint.
        recipe: the analysis of `engine.recipes`.
        settings: (run settings, step) -> the recipe's settings; None where the panel does not
            apply to this run (a level set of a regression, say).
        figure: the result -> a plotly figure.
        finished_only: it uses every checkpoint or the final weights, so it waits for the run's end.
    """

    key: str
    title: str
    page: str
    recipe: Callable
    settings: Callable[[dict, int], Optional[dict]]
    figure: Callable
    finished_only: bool = False
    extra: dict = field(default_factory=dict)


def _classifier(run: dict) -> bool:
    return task_of(run["id"]) == "classification"


@st.cache_data(max_entries=64, show_spinner=False)
def task_of(run_id: str) -> str:
    from engine.experiment import load_dataset

    return load_dataset(store(), run_id).task


def _eigenvectors(run: dict, step: int) -> dict:
    return dict(step=step, samples=200, k=4)


def _levelset(run: dict, step: int) -> Optional[dict]:
    """A walk from a test sample toward one of another class; the pair is chosen once per run
    (at the first checkpoint the overview shows), so every checkpoint walks the same pair."""
    if not _classifier(run):
        return None
    key = f"overview:pair:{run['id']}"
    if key not in st.session_state:
        st.session_state[key] = recipes.levelset_pairs(store(), run["id"], step)[:2]
    source, target = st.session_state[key]
    return dict(step=step, source=source, targets=(target,), steps=100)


PANELS = [
    Panel("ntk-spectrum", "NTK spectrum", "app_pages/ntk.py", recipes.ntk_spectrum,
          lambda run, step: dict(step=step, **NTK_SPECTRUM),  # the NTK page's: one fit
          lambda r: ntk_figures.spectrum_figure(r)),
    Panel("embedding", "Last hidden layer (PCA)", "app_pages/geometry.py", recipes.embedding,
          lambda run, step: dict(step=step, method="pca", samples=500),
          lambda r: geometry_figures.embedding_scatter(r, height=HEIGHT)),
    Panel("ntk-functions", "Top NTK eigenfunctions", "app_pages/ntk.py", recipes.ntk_eigenfunctions,
          lambda run, step: _eigenvectors(run, step) if recipes.ntk_view(store(), run["id"]) != "samples" else None,
          lambda r: ntk_figures.eigenfunctions_figure(r, columns=2)),
    Panel("ntk-extremes", "Top NTK eigenvectors' extreme samples", "app_pages/ntk.py", recipes.ntk_extreme_samples,
          lambda run, step: dict(step=step, samples=200, k=3, per_side=2)
          if recipes.ntk_view(store(), run["id"]) == "samples" else None,
          lambda r: ntk_figures.extreme_samples_figure(r)),
    Panel("surface", "Loss around the weights", "app_pages/landscape.py", recipes.random_plane_surface,
          lambda run, step: dict(step=step, split="train", samples=500, span=1.0, resolution=15),
          lambda r: landscape_figures.contour(r, log=True)),
    Panel("levelset", "A level-set walk", "app_pages/levelset.py", recipes.levelset_traversal, _levelset,
          lambda r: levelset_figures.path_profile(r)),
    Panel("ntk-trajectory", "Lazy or rich: how far weights and kernel move", "app_pages/lazy.py",
          recipes.ntk_trajectory, lambda run, step: dict(samples=100, kind="trace"),
          lambda r: ntk_figures.kernel_trajectory_figure(r), finished_only=True),
    Panel("prune-sweep", "Magnitude pruning (final weights)", "app_pages/pruning.py", recipes.pruning_sweep,
          lambda run, step: dict(methods=("magnitude",), sparsities=(0.5, 0.8, 0.9, 0.95)),
          lambda r: pruning_figures.accuracy_curves(r, corrupted=False), finished_only=True),
]


# ---------------------------------------------------------------- runs


def runs_with_weights() -> dict[str, object]:
    """Runs that have at least one checkpoint (running ones included), newest first."""
    return {r.id: r for r in store().list() if store().checkpoint_steps(r.id)}


def choose_runs() -> list[str]:
    runs = runs_with_weights()
    if not runs:
        st.info("No runs yet: start one on the Train page, then come back to watch it here.")
        return []
    names = {i: f"{r.name} · {r.dataset}" + (" · training" if r.status == Status.RUNNING else "") for i, r in runs.items()}
    asked = [i for i in st.query_params.get("run", "").split(",") if i]
    wanted = [i for i in asked if i in names][:2]
    if len(wanted) < len(asked[:2]) and "overview:runs" not in st.session_state:
        st.warning("The link names runs that this lab does not have (deleted, or not begun): choose runs here.")
    chosen = st.multiselect("Run (two to compare)", list(names), default=wanted if asked else list(names)[:1],
                            max_selections=2, format_func=names.get, key="overview:runs")
    if chosen:
        st.query_params["run"] = ",".join(chosen)
    return chosen


def live_job(run_id: str):
    """The training job of the run, if it is one (whichever session started it: read-only)."""
    return training_of_run(run_id)


def run_info(run_id: str) -> dict:
    settings = store().settings(run_id)
    return settings | {"id": run_id, "running": settings.get("status") == Status.RUNNING}


# ---------------------------------------------------------------- panels


def panel_result(panel: Panel, run: dict, step: int, settings: dict, wants: list):
    """The panel's newest result at or before `step`, and the step it is of. When it is not
    the result at `step`, the panel joins `wants`: the panels waiting for a job."""
    from engine import analysis

    if "step" not in settings:  # one picture of the whole (finished) run
        found = analysis.load(store(), run["id"], panel.key, settings, panel.recipe)
        if found is None:
            wants.append((panel, run, step, settings))
        return found, step
    last = _found(panel, run).get("last")  # (step, result): the newest found so far
    for earlier in reversed([s for s in store().checkpoint_steps(run["id"]) if s <= step]):
        found = last if last is not None and earlier == last[0] else _load_at(panel, run, settings, earlier)
        if found is not None:
            if last is None or found[0] > last[0]:
                _found(panel, run)["last"] = found
            if found[0] != step:
                wants.append((panel, run, step, settings))
            return found[1], found[0]
    wants.append((panel, run, step, settings))
    return None, None


def _found(panel: Panel, run: dict) -> dict:
    """The panel's newest result found so far (a result at a checkpoint never changes, so the
    search for the newest stops there instead of probing every older checkpoint again)."""
    return st.session_state.setdefault(f"overview:found:{run['id']}:{panel.key}", {})


def _load_at(panel: Panel, run: dict, settings: dict, step: int):
    from engine import analysis

    result = analysis.load(store(), run["id"], panel.key, settings | {"step": step}, panel.recipe)
    return (step, result) if result is not None else None


def start_jobs(wants: list, live: bool) -> None:
    """Start the jobs the waiting panels need.

    For finished runs, all at once. While a run trains, one at a time and only within
    LIVE_SHARE of the time (after a job of c seconds, the next waits c (1 / LIVE_SHARE - 1)),
    so the panels never take more than about that share of the CPU from the training; the
    panel updated longest ago goes first, cheap panels first among equals.
    """
    from engine import analysis

    wants = [w for w in wants if not _paused(w) and not _already_tried(w)]
    if live:
        if not wants or not _budget_allows():
            return
        wants = [min(wants, key=lambda w: st.session_state.get(_slot(w), {}).get("at", 0.0))]
    for panel, run, step, settings in wants:
        job = jobs().submit(analysis.cached, owner=owner(), kind="overview", label=panel.title, store=store(),
                            run_id=run["id"], lens=panel.key, settings=settings, recipe=panel.recipe)
        st.session_state[_slot((panel, run))] = {"job": job, "at": time.time(), "step": step}


def _slot(want) -> str:
    panel, run = want[0], want[1]
    return f"overview:{run['id']}:{panel.key}"


def _paused(want) -> bool:
    return bool(st.session_state.get(f"{_slot(want)}:paused"))


def _already_tried(want) -> bool:
    """A job of this panel is running, or its job for this very step ran (and failed)."""
    last = st.session_state.get(_slot(want))
    state = jobs().get(last["job"], owner()) if last else None
    return state is not None and (not state.done or last["step"] == want[2])


def _budget_allows() -> bool:
    states = jobs().list(owner(), kind="overview")
    if any(not s.done for s in states):
        return False
    finished = [s for s in states if s.started and s.finished]
    if not finished:
        return True
    last = max(finished, key=lambda s: s.finished)
    return time.time() >= last.finished + (last.finished - last.started) * (1 / LIVE_SHARE - 1)


def failure(panel: Panel, run: dict) -> Optional[str]:
    last = st.session_state.get(f"overview:{run['id']}:{panel.key}")
    state = jobs().get(last["job"], owner()) if last else None
    return state.error if state is not None and state.status == "failed" else None


def draw_panel(panel: Panel, run: dict, step: int, figures: list, wants: list) -> None:
    """One panel in a bordered box: its picture, its step, a pause toggle and a link."""
    if panel.finished_only and run["running"]:
        return
    try:
        settings = panel.settings(run, step)
    except ValueError as exc:
        settings = None
        st.caption(f"{panel.title}: {error_sentence(exc)}")
    if settings is None:
        return
    with st.container(border=True):
        head, pause = st.columns([4, 1])
        head.markdown(f"**{panel.title}**")
        pause.toggle("Pause", key=f"overview:{run['id']}:{panel.key}:paused", help="Keep this picture; compute nothing new.")
        result, shown = panel_result(panel, run, step, settings, wants)
        error = failure(panel, run)
        if error:
            st.caption(f"Could not compute: {error}")
        if result is None:
            st.caption("Computing…" if not error else "")
        else:
            figure = figure_of(panel, run["id"], shown, result)
            st.plotly_chart(figure, key=f"overview-{run['id']}-{panel.key}", width="stretch")
            figures.append((f"{panel.title} (step {shown:,})", figure))
            if shown != step:
                st.caption(f"Step {shown:,}; step {step:,} is being computed.")
        st.page_link(panel.page, label="Open the lens", icon=":material/open_in_new:",
                     query_params={"run": run["id"], "step": str(step)})


def figure_of(panel: Panel, run_id: str, step: int, result):
    """The panel's figure of a result, built once per (run, panel, step): a rerun only redraws it."""
    return kept_figure(f"overview:{run_id}:{panel.key}", step, lambda: sized(panel.figure(result)))


def sized(figure):
    figure.update_layout(height=HEIGHT)
    return figure


def training_panel(run: dict, step: int, figures: list) -> None:
    """Training curves and the predictions at the checkpoint (cheap: drawn in the page)."""
    from engine.results import History

    state = live_job(run["id"])
    history = state.partial.get("history") if state is not None else None
    if history is None and (saved := store().metrics(run["id"])):  # a training saves it as it goes
        history = History.from_dict(saved)
    with st.container(border=True):
        st.markdown("**Training**")
        if history is not None:
            figure = kept_figure(f"overview:{run['id']}:curves", history_version(history),
                                 lambda: sized(training_curves(history)))
            st.plotly_chart(figure, key=f"overview-{run['id']}-curves", width="stretch")
            figures.append(("Training curves", figure))
        else:
            st.caption("The curves appear with the run's first report.")
        view, shown = prediction_of(run, step, state)
        figure = kept_figure(f"overview:{run['id']}:view", shown, lambda: sized(prediction_figure(view)))
        st.plotly_chart(figure, key=f"overview-{run['id']}-view", width="stretch")
        figures.append((f"Predictions (step {shown:,})", figure))
        watched = load_watched(store(), run["id"]) or (state.partial.get("watch", {}) if state else {})
        if "lazy" in watched:
            figure = lazy_figures.measures_figure({run["name"]: watched["lazy"]}, columns=2)
            st.plotly_chart(figure, key=f"overview-{run['id']}-lazy", width="stretch")
            figures.append(("Lazy/rich measures", figure))


def prediction_of(run: dict, step: int, state) -> tuple[object, int]:
    """The predictions to draw at `step`, and the step they are of. Following a training this
    page can see, its own live view (as new as the newest checkpoint, or newer) costs nothing;
    otherwise the checkpoint's weights are loaded and evaluated."""
    newest = run["running"] and step == store().checkpoint_steps(run["id"])[-1]
    if newest and state is not None and state.partial.get("view_step", -1) >= step:
        return state.partial["view"], state.partial["view_step"]
    return prediction_at(run["id"], step), step


def run_column(run_id: str, step_key: str, figures: list, wants: list) -> None:
    run = run_info(run_id)
    steps = store().checkpoint_steps(run_id)
    follow = run["running"] and st.toggle("Follow the newest checkpoint", value=True, key=f"overview:follow:{run_id}")
    if follow or len(steps) == 1:
        step = steps[-1]
        st.caption(f"{run['name']} · step {step:,}" + (" · training" if run["running"] else ""))
    else:
        wanted = st.query_params.get(step_key, "")
        initial = int(wanted) if wanted.isdigit() and int(wanted) in steps else steps[-1]
        step = st.select_slider("Checkpoint (step)", steps, value=initial, key=f"overview:step:{run_id}")
        st.query_params[step_key] = str(step)
    training_panel(run, step, figures)
    left, right = st.columns(2)
    for i, panel in enumerate(PANELS):
        with (left, right)[i % 2]:
            draw_panel(panel, run, step, figures, wants)


def overview_page() -> None:
    st.title("Overview")
    st.write("Every lens on one run at one checkpoint: landscape, kernel, representations, level sets "
             "and pruning, side by side. Pick a run that is training to watch them change as it learns; "
             "each panel opens its full lens.")
    owner()
    chosen = choose_runs()
    if not chosen:
        return
    live = any(run_info(r)["running"] for r in chosen)
    # The grid polls while a run trains or a panel computes; it reruns the page to stop.
    st.session_state["overview:polling"] = polling = live or computing()
    with steady(GRID_KEY):
        st.fragment(run_every=LIVE_POLL_S if polling else None)(_grid)(chosen)


def computing() -> bool:
    return any(not s.done for s in jobs().list(owner(), kind="overview"))


def _grid(chosen: list[str]) -> None:
    live = any(run_info(r)["running"] for r in chosen)
    figures: list = []
    wants: list = []
    columns = st.columns(len(chosen))
    for i, (run_id, column) in enumerate(zip(chosen, columns)):
        with column:
            run_column(run_id, "step" if i == 0 else "step2", figures, wants)
    start_jobs(wants, live)
    if st.session_state.get("overview:polling") != (live or computing()):
        st.rerun()  # the whole page: start or stop polling
    report = {run_id: run_info(run_id) for run_id in chosen}
    st.download_button("Download this overview (interactive .html)",
                       data=lambda: overview_html(report, figures), file_name="overview.html",
                       mime="text/html", key="overview:export", icon=":material/download:")


overview_page()
