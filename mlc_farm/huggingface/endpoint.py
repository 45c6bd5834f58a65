"""Where the Hub is (HF_ENDPOINT, read at call time) and whether it answers: without importing huggingface_hub,
so the CLI, the page and exports can name a repo's address cheaply."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

HUB = "https://huggingface.co"


def endpoint() -> str | None:
    """HF_ENDPOINT read at call time (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT") or None


def repo_url(repo: str) -> str:
    """The web address of a Hub repo (on HF_ENDPOINT when set): its files are under `/resolve/<commit>/`."""
    return f"{(endpoint() or HUB).rstrip('/')}/{repo}"


def unanswerable(seconds: float = 3.0) -> str | None:
    """None when the Hub can be asked now; else why not (offline mode, or no connection in `seconds`). A dry run
    asks this first instead of riding out huggingface_hub's retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    url = urlsplit(endpoint() or HUB)
    try:
        socket.create_connection(
            (url.hostname or "", url.port or (443 if url.scheme == "https" else 80)), seconds
        ).close()
    except OSError as e:
        return f"no connection to {url.scheme}://{url.netloc} ({e.strerror or type(e).__name__})"
    return None
