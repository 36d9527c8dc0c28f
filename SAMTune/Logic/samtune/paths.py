"""Per-user folders: one rule for the weights cache, the model library and anything else SAMTune keeps.

A folder of kind ``K`` is, in order: the environment variable given for it (``SAMTUNE_WEIGHTS_DIR``,
``SAMTUNE_MODELS_DIR``), ``$SAMTUNE_HOME/K``, or the platform's per-user folder — the cache folder for
things that can be downloaded again, the data folder for things the user made.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def user_dir(kind: str, *, override_env: str, cache: bool) -> Path:
    """The per-user folder ``kind`` (e.g. ``weights``, ``models``); see the module docstring.

    Platform folders: Linux ``~/.cache/samtune/K`` (cache) or ``~/.local/share/samtune/K`` (data,
    honouring ``XDG_CACHE_HOME``/``XDG_DATA_HOME``); macOS ``~/Library/Caches/samtune/K`` or
    ``~/Library/Application Support/samtune/K``; Windows ``%LOCALAPPDATA%\\samtune\\K`` or
    ``%APPDATA%\\samtune\\K``.
    """
    if os.environ.get(override_env):
        return Path(os.environ[override_env]).expanduser()
    if os.environ.get("SAMTUNE_HOME"):
        return Path(os.environ["SAMTUNE_HOME"]).expanduser() / kind
    home = Path.home()
    if sys.platform == "darwin":
        base = home / "Library" / ("Caches" if cache else "Application Support")
    elif sys.platform.startswith("win"):
        variable, fallback = ("LOCALAPPDATA", "Local") if cache else ("APPDATA", "Roaming")
        base = Path(os.environ.get(variable) or home / "AppData" / fallback)
    else:
        variable, fallback = (
            ("XDG_CACHE_HOME", home / ".cache") if cache else ("XDG_DATA_HOME", home / ".local" / "share")
        )
        base = Path(os.environ.get(variable) or fallback)
    return base / "samtune" / kind
