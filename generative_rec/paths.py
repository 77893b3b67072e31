"""Where generative_rec keeps fetched data and converted models (``$GENREC_HOME``, default ~/.cache)."""

from __future__ import annotations

import os
from pathlib import Path


def genrec_home() -> Path:
    home = os.environ.get("GENREC_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "generative_rec"
    )
    p = Path(home)
    p.mkdir(parents=True, exist_ok=True)
    return p


def repo_root() -> Path:
    """The source checkout (holds prompts/, train/, serve/) when running from one."""
    return Path(__file__).resolve().parent.parent
