"""Training runs of this browser session on the Train page: starting one in the background,
drawing its progress and live curves, and saving it."""

from __future__ import annotations


def session_alive_check():  # -> Callable[[], bool] | None
    """A check, safe to call from any thread, that this browser session is still connected
    (its tab open); None when not served by `streamlit run` (e.g. under AppTest)."""
    from streamlit.runtime import Runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx(suppress_warning=True)
    if ctx is None or not Runtime.exists():
        return None
    runtime, session_id = Runtime.instance(), ctx.session_id
    return lambda: runtime.is_active_session(session_id)
