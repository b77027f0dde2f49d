"""Dynamics Lab: the entry point only navigates; each page is one file in app_pages/."""
import streamlit as st

from app_pages.owner import remember_owner

st.set_page_config(page_title="Dynamics Lab", page_icon=":material/science:", layout="wide")

navigation = st.navigation([
    st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("app_pages/train.py", title="Train", icon=":material/play_arrow:"),
    st.Page("app_pages/runs.py", title="Runs", icon=":material/folder_open:"),
    st.Page("app_pages/overview.py", title="Overview", icon=":material/dashboard:"),
    st.Page("app_pages/landscape.py", title="Loss landscape", icon=":material/landscape:"),
    st.Page("app_pages/ntk.py", title="Neural tangent kernel", icon=":material/hub:"),
    st.Page("app_pages/lazy.py", title="Lazy versus rich", icon=":material/speed:"),
    st.Page("app_pages/geometry.py", title="Representation geometry", icon=":material/scatter_plot:"),
    st.Page("app_pages/levelset.py", title="Level sets", icon=":material/conversion_path:"),
    st.Page("app_pages/pruning.py", title="Pruning", icon=":material/content_cut:"),
])
remember_owner()  # this browser's cookie: its reloads and other tabs may still stop its runs
navigation.run()
