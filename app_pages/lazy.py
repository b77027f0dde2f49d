"""Lazy versus rich: a lesson to run live, a free comparison, and the alpha x width phase diagram.

Every configuration trains as an ordinary run with its lazy/rich measures and its linearized
twin watched (see `engine.probes`), so each is saved and opens in every other lens. The runs
of a lesson step, or of the free comparison, are followed under that step or mode only; the
URL names them by run id, so a link shows them live to anyone (read-only).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import streamlit as st

from app_pages.lab import (
    POLL_S,
    error_sentence,
    finished_runs,
    job_progress,
    jobs,
    kept_figure,
    owner,
    status_text,
    steady,
    store,
    submit_training,
    training_of_run,
)
from engine import presets as preset_files
from engine.experiment import Experiment, load_watched, parse
from engine.lazy import sweep_job
from engine.models import PARAMETRIZATIONS
from engine.probes import WatchConfig
from engine.sweep import configured_backend, where
from viz import lazy as figures
from viz.predictions import prediction_figure
from viz.training import compare_curves

LESSON = "lazy-rich"
WATCH = WatchConfig(lazy=True, twin=True, samples=64)
MODES = ("Lesson", "Free comparison", "Phase diagram", "Saved runs")
DECIDING_TITLE = "Where the runs stand: the deciding measures"  # first among the results: the evidence

# (measure, what it says, formula in LaTeX)
EXPLAINED = [
    ("Relative weight change", "How far the weights have moved, relative to their size at init: "
     "it vanishes in the lazy regime.", r"\|w_t - w_0\| / \|w_0\|"),
    ("Kernel distance", "How much the NTK has changed shape since init, blind to its scale: 0 means "
     "the network still learns with its initial kernel.",
     r"1 - \langle K_0, K_t\rangle_F / (\|K_0\|_F \|K_t\|_F)"),
    ("Kernel velocity", "How fast the kernel is changing now: its relative change since the previous "
     "checkpoint, per 1,000 steps (Fort et al. 2020). Rich training keeps it up; lazy training stops it.",
     r"\frac{1000}{t - s}\,\|K_t - K_s\|_F / \|K_s\|_F"),
    ("Kernel-target alignment", "How well the kernel's geometry matches the targets (centred): it "
     "grows when the network learns features for the task.",
     r"\langle HKH, HYY^\top H\rangle_F / (\|HKH\|_F \|HYY^\top H\|_F)"),
    ("CKA to init", "How similar the last hidden layer's representation is to its initial one "
     "(1: the same up to rotation and scale).", r"\mathrm{CKA}(H_t, H_0)"),
    ("Effective rank", "How many directions the last hidden layer really uses (entropy of its "
     "normalised singular values).", r"\exp\left(-\textstyle\sum_i p_i \log p_i\right),\ p_i = \sigma_i / \sum_j \sigma_j"),
    ("Gap to the linearized twin", "How far the network is from its first-order Taylor model at init, "
     "trained alongside with the same optimizer and batches, relative to how far it has moved.",
     r"\|f - f_{\mathrm{lin}}\| / \|f - f_0\|,\quad f_{\mathrm{lin}}(x; w) = f(x; w_0) + J(x; w_0)(w - w_0)"),
]


def introduction() -> None:
    st.title("Lazy versus rich")
    st.write(
        "A network can learn in two ways. In the **lazy** (kernel) regime its weights barely move, "
        "its neural tangent kernel stays put and it behaves like its linearization at init. In the "
        "**rich** regime it learns features: the kernel turns toward the task. The output scale "
        "alpha, the width, the parametrization and the initial weights decide which "
        "(Chizat, Oyallon & Bach 2019; Geiger et al. 2020; Yang & Hu 2021)."
    )
    with st.expander("The measures, their formulas"):
        for name, text, formula in EXPLAINED:
            st.markdown(f"**{name}.** {text}")
            st.latex(formula)


# ---------------------------------------------------------------- training together


def train_together(scope: str, runs: list[tuple[str, Experiment]]) -> None:
    """Start one watched training job per configuration (with the lazy/rich measures and the
    twin unless it says what to watch); the page follows them under `scope` (a lesson step,
    or the free comparison)."""
    st.session_state.setdefault("lazy_jobs", {})[scope] = [
        (name, submit_training(name, experiment if experiment.watch.active
                               else dataclasses.replace(experiment, watch=WATCH), _run_name(name)))
        for name, experiment in runs]


def followed_jobs(scope: str) -> list[tuple[str, object]]:
    """The trainings shown under `scope`: this session's, else those of the runs the link
    named when the page opened on this scope (found by run id, read-only)."""
    own = st.session_state.setdefault("lazy_jobs", {})
    linked = st.session_state.setdefault("lazy_linked", {scope: [i for i in st.query_params.get("runs", "").split(",")
                                                                 if i]})
    if scope in own:
        states = [(name, jobs().get(job_id, owner())) for name, job_id in own[scope]]
    else:
        states = [(state.label, state) for state in map(training_of_run, linked.get(scope, []))]
    return [(name, state) for name, state in states if state is not None]


def share_runs(scope: str, followed: list) -> None:
    """Name the followed trainings' runs in the URL (once each job has made its run)."""
    ids = [state.partial["run_id"] for _, state in followed if state.partial.get("run_id")]
    if ids:
        st.query_params["runs"] = ",".join(ids)
    elif "runs" in st.query_params:
        if st.session_state.get("lazy_linked", {}).get(scope):
            st.info("The link's runs are not training on this server any more: compare them under Saved runs.")
        del st.query_params["runs"]


def live_comparison(scope: str, step_runs: list[tuple[str, Experiment]] = ()) -> None:
    """The trainings followed under `scope` side by side; polls while any of them trains.
    With nothing followed (a reloaded page), the newest saved runs of `step_runs` (a lesson
    step's runs, found in the store by name and settings) are shown instead."""
    followed = followed_jobs(scope)
    share_runs(scope, followed)
    if not followed:
        if saved := saved_step_runs(step_runs):
            st.caption("Trained earlier: " + "; ".join(store().settings(i)["name"] for _, i in saved)
                       + ". Train again to watch them live.")
            draw_results([saved_result(name, run_id) for name, run_id in saved])
        return
    running = any(not state.done for _, state in followed)
    with steady("lazy-live"):  # (one live comparison per page: the lesson's step or the free one)
        st.fragment(run_every=POLL_S if running else None)(_draw_live)(scope)


def _draw_live(scope: str) -> None:
    followed = followed_jobs(scope)
    share_runs(scope, followed)
    draw_results([live_result(name, state) for name, state in followed])
    ended = [state.id for _, state in followed]
    if all(state.done for _, state in followed) and st.session_state.get(f"lazy_drawn:{scope}") != ended:
        st.session_state[f"lazy_drawn:{scope}"] = ended
        st.rerun()  # the whole page: the fragment stops polling


@dataclasses.dataclass
class Shown:
    """One configuration's results as the page draws them, live or saved."""

    name: str
    key: str  # unique among the page's charts (the job or the run id)
    view: object = None  # the prediction view
    history: object = None
    measures: object = None  # LazyMeasures
    state: object = None  # the training job's state, while it is followed


def live_result(name: str, state) -> Shown:
    partial = state.partial
    return Shown(name, state.id, partial.get("view"), partial.get("history"),
                 partial.get("watch", {}).get("lazy"), state)


def saved_result(name: str, run_id: str) -> Shown:
    from engine.results import History

    return Shown(name, run_id, saved_view(run_id), History.from_dict(store().metrics(run_id)),
                 load_watched(store(), run_id).get("lazy"))


@st.cache_data(max_entries=32)
def saved_view(run_id: str):
    """A saved run's prediction view at its last checkpoint (computed once per run)."""
    from engine.experiment import load_dataset, load_model
    from engine.views import prediction_view

    return prediction_view(load_model(store(), run_id), load_dataset(store(), run_id))


def saved_step_runs(step_runs: list[tuple[str, Experiment]]) -> list[tuple[str, str]]:
    """[(name, run id)] of the newest finished run of each of `step_runs`, saved under the name
    the page gives it and with exactly its settings; empty unless every one of them is found."""
    newest = {}
    for run in finished_runs():  # newest first
        newest.setdefault(run.name, run.id)
    found = []
    for name, experiment in step_runs:
        run_id = newest.get(_run_name(name))
        if run_id is None or Experiment.from_dict(store().settings(run_id)).to_dict() != experiment.to_dict():
            return []
        found.append((name, run_id))
    return found


def _run_name(name: str) -> str:
    """The stored run's name of a configuration trained here."""
    return f"lazy/rich: {name}"


def shown_version(shown: list[Shown]) -> tuple:
    """What changes when any shown result does: each one's key and the step of its job's last
    report (history, view and measures are reported together); a saved run never changes."""
    return tuple((s.key, s.state.partial.get("view_step") if s.state is not None else None) for s in shown)


def draw_results(shown: list[Shown]) -> None:
    """The deciding measures first, then each configuration's fit, then the curves and measures.
    Each figure is built again only when a result it shows has changed (`kept_figure`)."""
    version = shown_version(shown)
    measures = {s.name: s.measures for s in shown if s.measures is not None}
    if measures:
        deciding = kept_figure("lazy:deciding", version, lambda: figures.deciding_figure(measures, title=DECIDING_TITLE))
        st.plotly_chart(deciding, key="lazy-deciding", width="stretch")
    for i, (s, column) in enumerate(zip(shown, st.columns(len(shown)))):
        if s.state is not None:
            state = s.state
            column.progress(min(max(state.progress, 0.0), 1.0), text=status_text(state, s.name))
            if state.status == "failed":
                column.error(state.error or "Training failed.")
            elif state.result and state.result.get("status") == "diverged":
                column.warning(state.result["message"])
        if s.view is not None:
            view = kept_figure(f"lazy:view:{i}", version, lambda s=s: prediction_figure(s.view, title=s.name))
            column.plotly_chart(view, key=f"lazy-view-{s.key}", width="stretch")
    histories = {s.name: s.history for s in shown if s.history is not None}
    comparison_figures(histories, measures, key="live", version=version)


def comparison_figures(histories: dict, measures: dict, *, key: str, version) -> None:
    """Training curves, the measures on shared axes, the twins and each layer's change; each
    figure is built again only when `version` changes."""

    def chart(place, name: str, build) -> None:
        place.plotly_chart(kept_figure(f"lazy:{key}-{name}", version, build), key=f"{key}-{name}", width="stretch")

    if histories:
        classified = any(not np.isnan(h.test_accuracy).all() for h in histories.values() if h.test_accuracy)
        metrics = [("eval_train_loss", "Training loss"), ("test_loss", "Test loss")]
        if classified:  # grokking shows in accuracy: train at 100% long before test
            metrics = [("eval_train_accuracy", "Training accuracy"), ("test_accuracy", "Test accuracy")] + metrics
        for (metric, title), column in zip(metrics, st.columns(len(metrics))):
            chart(column, metric, lambda metric=metric, title=title: compare_curves(histories, metric, title=title))
    if measures:
        chart(st, "measures", lambda: figures.measures_figure(measures))
        left, right = st.columns(2)
        chart(left, "twin", lambda: figures.twin_figure(measures, title="The network against its linearized twin"))
        chart(right, "layers",
              lambda: figures.layer_change_figure(measures, title="Weight change by layer (last checkpoint)"))


# ---------------------------------------------------------------- lesson


@st.cache_data
def lesson_steps():
    return preset_files.lesson(LESSON)


def lesson() -> tuple[str, list[tuple[str, Experiment]]]:
    """The chosen lesson step, its knob and its Train button; returns the step's scope and runs."""
    steps = lesson_steps()
    wanted = st.query_params.get("step", "1")
    number = int(wanted) if wanted.isdigit() and 1 <= int(wanted) <= len(steps) else 1
    if str(number) != wanted and "lazy:step" not in st.session_state:
        st.warning(f"The link's step '{wanted}' is not a step of this lesson (1 to {len(steps)}); here is step 1.")
    number = st.segmented_control("Step", list(range(1, len(steps) + 1)), default=number,
                                  format_func=lambda i: f"{i}. {steps[i - 1].title}", key="lazy:step") or number
    st.query_params["step"] = str(number)
    step = steps[number - 1]
    st.subheader(step.title)
    st.write(step.description)
    runs = step.runs
    if step.knob:
        choices = [str(c) for c in step.knob["choices"]]
        default = str(step.knob.get("default", choices[len(choices) // 2]))
        value = st.select_slider(step.knob["label"].capitalize() + " of the last run", choices, value=default,
                                 key=f"lazy:knob:{step.key}", help=f"Sets {step.knob['key']} of the last run.")
        runs = step.with_knob(value)
    st.info(f"**Watch:** {step.watch}", icon=":material/visibility:")
    st.caption("Runs: " + "; ".join(run.name for run in runs))
    scope = f"lesson:{step.key}"
    if st.button("Train these runs together", type="primary", key="lazy:lesson-start", disabled=busy(scope)):
        train_together(scope, [(run.name, run.experiment) for run in runs])
        st.rerun()
    return scope, [(run.name, run.experiment) for run in runs]


def busy(scope: str) -> bool:
    """Whether this session's trainings under `scope` still run (one set at a time)."""
    return any(not state.done for _, state in followed_jobs(scope) if state.owner == owner())


# ---------------------------------------------------------------- free comparison

SHARED = Experiment("circle", model=Experiment().model, train=dataclasses.replace(
    Experiment().train, optimizer="gd", lr=0.2, steps=400, checkpoint_every=50, eval_every=50))


FREE = "free"  # the free comparison's scope


def free_mode() -> None:
    st.write("Choose two to four configurations; they train at the same time, on the same data, "
             "each with its linearized twin.")
    with st.expander("Shared settings", expanded=False):
        data = st.selectbox("Data", ["circle", "wave", "teacher", "moons", "gaussians", "modular"], key="lazy:data")
        depth = st.number_input("Depth", 1, 6, 1, key="lazy:depth")
        optimizer = st.selectbox("Optimizer", ["gd", "sgd", "adam", "adamw"], key="lazy:optimizer")
        steps = st.number_input("Steps", 10, 20000, 400, step=100, key="lazy:steps")
    count = st.slider("Configurations", 2, 4, 2, key="lazy:count")
    runs, problems = [], []
    for i, column in enumerate(st.columns(count)):
        with column:
            name, experiment, errors = configuration(i, data, depth, optimizer, steps)
            runs.append((name, experiment))
            problems += errors
    if st.button("Train together", type="primary", key="lazy:free-start", disabled=bool(problems) or busy(FREE)):
        train_together(FREE, runs)
        st.rerun()


def configuration(i: int, data: str, depth: int, optimizer: str, steps: int):
    """One column's knobs; returns its name, experiment and the sentences of bad settings."""
    st.markdown(f"**Configuration {i + 1}**")
    alpha = st.text_input("Output scale alpha", ["0.1", "10", "1", ""][i], key=f"lazy:alpha:{i}",
                          help="Empty: the plain network. A number: alpha (f(w) - f(w0)), loss / alpha^2.")
    width = st.select_slider("Width", [16, 32, 64, 128, 256, 512, 1024], 128, key=f"lazy:width:{i}")
    parametrization = st.selectbox("Parametrization", PARAMETRIZATIONS, index=PARAMETRIZATIONS.index("ntk"),
                                   key=f"lazy:param:{i}")
    init_scale = st.text_input("Init scale", "1.0", key=f"lazy:init:{i}")
    rank = st.text_input("Initial rank", "", key=f"lazy:rank:{i}", help="Empty: full rank.")
    lr = st.text_input("Learning rate", "0.2", key=f"lazy:lr:{i}")
    flat = {"data": data, "model.depth": str(depth), "model.width": str(width), "model.alpha": alpha,
            "model.parametrization": parametrization, "model.init_scale": init_scale, "model.rank": rank,
            "train.optimizer": optimizer, "train.lr": lr, "train.steps": str(steps),
            "train.checkpoint_every": str(max(steps // 10, 1)), "train.eval_every": str(max(steps // 10, 1))}
    experiment, errors = Experiment.from_flat(flat)
    errors |= experiment.errors()
    for sentence in errors.values():
        st.error(sentence)
    name = f"alpha {alpha or 'none'}, width {width}, {parametrization}" + (f", rank {rank}" if rank else "")
    return f"{i + 1}: {name}", experiment, list(errors.values())


# ---------------------------------------------------------------- phase diagram

# (field of PhaseDiagram, label, log colour scale)
PHASE_MEASURES = [("weight_change", "relative weight change", True), ("kernel_distance", "kernel distance", True),
                  ("test_loss", "test loss", True), ("alignment", "kernel-target alignment", False)]


def phase_diagram() -> None:
    st.write("Train a grid of output scales alpha and widths (and seeds) of one network: all alphas and "
             "seeds of one width train together as one vectorised ensemble. Large alpha and large width "
             "are lazy; small alpha is rich (Geiger et al. 2020). Click a cell to open its run.")
    left, right = st.columns(2)
    with left:
        data = st.selectbox("Data", ["circle", "wave", "teacher", "moons", "gaussians"], key="phase:data")
        alphas = st.text_input("Output scales alpha", "0.01, 0.1, 1, 10, 100", key="phase:alphas")
        widths = st.text_input("Widths", "16, 64, 256", key="phase:widths")
        seeds = st.number_input("Seeds", 1, 5, 1, key="phase:seeds")
    with right:
        parametrization = st.selectbox("Parametrization", PARAMETRIZATIONS, index=PARAMETRIZATIONS.index("ntk"),
                                       key="phase:param")
        optimizer = st.selectbox("Optimizer", ["gd", "sgd", "adam"], key="phase:optimizer",
                                 help="Adam normalises the gradient, so the 1/alpha^2 loss scale does not make it lazy.")
        lr = st.text_input("Learning rate", "0.2", key="phase:lr")
        steps = st.number_input("Steps", 10, 20000, 300, step=100, key="phase:steps")
    flat = {"data": data, "model.depth": "1", "model.parametrization": parametrization, "train.optimizer": optimizer,
            "train.lr": lr, "train.steps": str(steps), "train.checkpoint_every": str(steps),
            "train.eval_every": str(max(steps // 10, 1))}
    experiment, errors = Experiment.from_flat(flat)
    errors |= experiment.errors()
    grid = []
    for key, text, like in (("alphas", alphas, [0.0]), ("widths", widths, [0])):
        try:
            grid.append(parse(text, like))
        except ValueError as exc:
            errors[key] = error_sentence(exc)
    for sentence in errors.values():
        st.error(sentence)
    backend, address = configured_backend()
    st.caption(f"Run on: {where(backend, address)}. Each width is one task; a finished width is kept, "
               "so running a cancelled sweep again resumes it.")
    if st.button("Run the sweep", type="primary", key="phase:start", disabled=bool(errors)):
        st.session_state.sweep_job = jobs().submit(sweep_job, owner=owner(), kind="sweep", label="Phase diagram",
                                                   store=store(), experiment=experiment, alphas=grid[0],
                                                   widths=grid[1], seeds=list(range(int(seeds))),
                                                   backend=backend, address=address)
        st.session_state.sweep_widths = grid[1]
    if "sweep" in st.query_params:
        del st.query_params["sweep"]  # links of older versions named the job; a sweep is this session's
    sweep_result()


def sweep_result() -> None:
    """This session's sweep: its progress while it runs, its heatmaps when done (a sweep
    computed before comes back at once from the store)."""
    job_id = st.session_state.get("sweep_job")
    state = jobs().get(job_id, owner()) if job_id else None
    if state is None:
        return
    if not state.done:
        st.fragment(run_every=POLL_S)(sweep_progress)(job_id)
        return
    if state.status == "failed":
        st.error(state.error or "The sweep failed.")
        return
    if state.status == "cancelled":
        st.info("The sweep was cancelled. The widths that had finished are kept: run it again to resume.")
        return
    draw_phase_diagram(state.result)


def sweep_progress(job_id: str) -> None:
    """The sweep's bar with its Cancel button, and where each width (a cell) stands."""
    job_progress(job_id, [str(width) for width in st.session_state.get("sweep_widths", [])], "Widths")


def draw_phase_diagram(diagram) -> None:
    chosen = None
    for (field, label, log), column in zip(PHASE_MEASURES, st.columns(2) + st.columns(2)):
        figure = figures.phase_heatmap(getattr(diagram, field), diagram.alphas, diagram.widths, label=label,
                                       log=log, title=label.capitalize())
        event = column.plotly_chart(figure, key=f"phase-{field}", on_select="rerun", selection_mode="points",
                                    width="stretch")
        chosen = chosen or figures.selected_cell(event)
    if diagram.diverged.any():
        st.warning(f"{int(diagram.diverged.sum())} of {diagram.diverged.size} networks diverged (blank cells): "
                   "try a smaller learning rate.")
    labels = [(i, j) for j in range(len(diagram.widths)) for i in range(len(diagram.alphas))]
    cell = st.selectbox("Open the run of a cell", labels, index=labels.index(chosen) if chosen in labels else 0,
                        format_func=lambda c: f"alpha {diagram.alphas[c[0]]:g}, width {diagram.widths[c[1]]}",
                        key="phase:cell")
    run_id = diagram.run_ids[cell]
    if run_id:
        st.page_link("app_pages/runs.py", label="Open this run", icon=":material/arrow_forward:",
                     query_params={"runs": run_id})
    else:
        st.caption("This cell's run has been deleted.")


# ---------------------------------------------------------------- saved runs


def saved_runs() -> None:
    """Runs trained with the lazy/rich measures, compared on shared axes."""
    watched = {r.id: r for r in finished_runs() if _watched_lazy(store().settings(r.id))}
    if not watched:
        st.info("No saved run has lazy/rich measures yet: train some here, or tick "
                "\"Lazy/rich measures\" on the Train page.")
        return
    chosen = st.multiselect("Runs", list(watched), default=list(watched)[:2], max_selections=4,
                            format_func=lambda i: watched[i].name, key="lazy:saved")
    from engine.results import History

    histories = {watched[i].name: History.from_dict(store().metrics(i)) for i in chosen}
    measures = {watched[i].name: load_watched(store(), i)["lazy"] for i in chosen}
    comparison_figures(histories, measures, key="saved", version=tuple(chosen))


def _watched_lazy(settings: dict) -> bool:
    watch = settings.get("watch", {})
    return bool(watch.get("lazy") or watch.get("twin"))


def lazy_page() -> None:
    introduction()
    owner()
    wanted = st.query_params.get("mode", MODES[0])
    if wanted not in MODES and "lazy:mode" not in st.session_state:
        st.warning(f"The link's mode '{wanted}' is not one of this page's ({', '.join(MODES)}); here is the lesson.")
    mode = st.segmented_control("Mode", MODES, default=wanted if wanted in MODES else MODES[0],
                                key="lazy:mode") or MODES[0]
    st.query_params["mode"] = mode
    if mode not in ("Lesson", "Free comparison") and "runs" in st.query_params:
        del st.query_params["runs"]  # trainings belong to the lesson's steps and the free comparison
    if "jobs" in st.query_params:
        del st.query_params["jobs"]  # links of older versions named the jobs; run ids do now
    if mode == "Lesson":
        live_comparison(*lesson())
    elif mode == "Free comparison":
        free_mode()
        live_comparison(FREE)
    elif mode == "Phase diagram":
        phase_diagram()
    else:
        saved_runs()


try:
    lazy_page()
except ValueError as exc:  # a bad preset or setting: say it, keep the page
    st.error(error_sentence(exc))
