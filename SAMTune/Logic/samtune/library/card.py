"""The model card of a trained model folder: plain JSON, read without torch.

The model library lists, renames and exports models through this module alone, so the Slicer panel
shows the library before PyTorch is installed. Loading and saving the weights is
:mod:`samtune.library.model_folder`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from samtune.errors import WeightsError

#: File names inside a model folder.
MODEL_CARD = "model_card.json"
MODEL_WEIGHTS = "weights.safetensors"
#: Version of the card's layout.
CARD_VERSION = 1


def read_model_card(folder: str | Path) -> dict[str, Any]:
    """The model card of a trained model folder.

    Raises:
        WeightsError: Not a SAMTune model folder, or an unreadable card.
    """
    folder = Path(folder).expanduser()
    path = folder / MODEL_CARD
    if not path.is_file():
        raise WeightsError(
            f"'{folder}' is not a SAMTune model folder (no {MODEL_CARD}). Pick the folder `samtune train` wrote."
        )
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise WeightsError(f"The model card '{path}' is unreadable ({error}). The model folder is damaged.") from error
    if card.get("format") != "samtune-model":
        raise WeightsError(f"'{path}' is not a SAMTune model card.")
    return card  # type: ignore[no-any-return]
