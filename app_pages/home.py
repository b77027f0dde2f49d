"""Home: what the lab is and what each lens shows."""
import streamlit as st

# (title, two sentences, page file or None while the lens is being built)
LENSES = [
    ("Train",
     "Train an MLP or a small CNN on a toy problem, MNIST-1D, digits or your own data, and "
     "watch the loss curves and the decision regions or fitted function change as it learns. "
     "Every run is saved, and the link in your address bar reproduces the experiment.",
     "app_pages/train.py"),
    ("Runs",
     "Open, rename, delete and download finished runs. Compare the curves of two to four runs "
     "on shared axes.",
     "app_pages/runs.py"),
    ("Overview",
     "Every lens side by side on one run, or two, at one checkpoint: landscape, kernel, "
     "representations, level sets and pruning. Point it at a run that is training and the panels "
     "follow its newest checkpoint; download the whole overview as one interactive HTML file.",
     "app_pages/overview.py"),
    ("Loss landscape",
     "The loss around the trained weights along filter-normalized random directions "
     "(Li et al. 2018), with the optimizer's trajectory and the Hessian's spectrum. "
     "Sharp and flat minima, mode connectivity and the edge of stability become visible.",
     "app_pages/landscape.py"),
    ("Neural tangent kernel",
     "The empirical NTK's spectrum and eigenfunctions over input space, and how far training "
     "moves them. Large-eigenvalue directions are learned first: spectral bias, made visible.",
     "app_pages/ntk.py"),
    ("Lazy versus rich",
     "Turn the output scale, width or parametrization and see training switch between the "
     "kernel regime, where weights barely move, and feature learning. A lesson a teacher can "
     "run live.",
     "app_pages/lazy.py"),
    ("Representation geometry",
     "Embeddings, CKA, RSA and neural collapse of the hidden layers over training. See how "
     "activations and seeds shape what a network represents.",
     "app_pages/geometry.py"),
    ("Level sets",
     "Walk from one input toward another while the model's confidence stays fixed "
     "(Balasubramanian & Feizi 2023). The inputs a model cannot tell apart are larger than "
     "they look.",
     "app_pages/levelset.py"),
    ("Pruning",
     "Prune by many criteria, one-shot or iteratively, and compare accuracy, robustness and "
     "last-layer geometry side by side.",
     "app_pages/pruning.py"),
]


def home() -> None:
    st.title("Dynamics Lab")
    st.write(
        "Train small neural networks live and watch what training does to them. "
        "Start on the **Train** page; every lens below looks at the same runs."
    )
    for title, text, page in LENSES:
        with st.container(border=True):
            if page:
                st.page_link(page, label=title)
            else:
                st.markdown(f"**{title}** · *in development*")
            st.caption(text)


home()
