"""Who is asking: the owner of the jobs that a browser starts, kept in a cookie of that browser.

Only a job's owner may stop or change it. The owner is derived from a random secret that the
browser keeps in a cookie (`dynamics_lab_owner`, SameSite=Strict, for 30 days): every tab and
every reload of one browser is the same owner, so a reloaded tab can still stop the run it
started. The secret never enters the URL: a copied link opened in another browser (another
cookie jar) shows a run live but cannot stop it.

Streamlit imports only (no torch): app.py calls `remember_owner` before every page, the Home
page's light start-up included.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping

import streamlit as st
import streamlit.components.v1 as components

COOKIE = "dynamics_lab_owner"
COOKIE_MAX_AGE_S = 30 * 24 * 3600
SECRET = re.compile(r"[0-9a-f]{32}")  # what secrets.token_hex(16) makes


def owner() -> str:
    """This browser's owner id: from the secret in its cookie, or from a new secret on a
    first visit (which `remember_owner` then stores in the cookie). Fixed for the session."""
    if "owner" not in st.session_state:
        secret = secret_in(sent_cookies()) or secrets.token_hex(16)
        st.session_state.owner_secret = secret
        st.session_state.owner = owner_of(secret)
    if "session" in st.query_params:
        del st.query_params["session"]  # links of older versions carried a token: drop it
    return st.session_state.owner


def owner_of(secret: str) -> str:
    """The owner id of a secret: a hash, so that the id, which every job carries and the
    pages compare, is no proof of ownership; only the secret is, and only the cookie holds it."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def secret_in(cookies: Mapping[str, str]) -> str | None:
    """The secret in the cookies, or None when there is none or it is not one of ours (a
    browser's cookies are its user's to edit)."""
    value = cookies.get(COOKIE)
    return value if isinstance(value, str) and SECRET.fullmatch(value) else None


def sent_cookies() -> Mapping[str, str]:
    """The cookies the browser sent when this session opened (Streamlit reads them once)."""
    return st.context.cookies


def remember_owner() -> None:
    """Have the browser keep this session's secret in its cookie, so that its next session (a
    reload, another tab) is the same owner. Called before every page, never in a fragment.

    Streamlit cannot set a cookie in its HTTP responses, so a script in a zero-height component
    does it in the browser: the component's iframe (srcdoc, allow-same-origin) has the app's
    origin and may write its page's cookie. Drawn only while the cookie the session opened
    with lacks the secret, that is, in a browser's first session; later ones draw nothing.
    """
    owner()
    secret = st.session_state.owner_secret
    if secret_in(sent_cookies()) != secret:
        components.html(cookie_script(secret), height=0)


def cookie_script(secret: str) -> str:
    """A script that stores `secret` in the app page's cookie (Secure when served over https)."""
    if not SECRET.fullmatch(secret):
        raise ValueError("An owner secret is 32 lowercase hexadecimal digits.")
    cookie = f"{COOKIE}={secret}; Path=/; Max-Age={COOKIE_MAX_AGE_S}; SameSite=Strict"
    return ("<script>const app = window.parent;"
            f"app.document.cookie = '{cookie}' + (app.location.protocol === 'https:' ? '; Secure' : '');</script>")
