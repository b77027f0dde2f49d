"""Dynamics Lab: the entry point only navigates; each page is one file in app_pages/."""
import streamlit as st

st.set_page_config(page_title="Dynamics Lab", page_icon=":material/science:", layout="wide")

navigation = st.navigation([
    st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("app_pages/train.py", title="Train", icon=":material/play_arrow:"),
    st.Page("app_pages/runs.py", title="Runs", icon=":material/folder_open:"),
])
navigation.run()
