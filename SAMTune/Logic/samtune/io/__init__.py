"""Files SAMTune writes: trained model folders (adapter weights + model card)."""

from typing import TYPE_CHECKING

from samtune._lazy import lazy_exports

if TYPE_CHECKING:
    from samtune.io.model_card import MODEL_CARD, MODEL_WEIGHTS, read_model_card
    from samtune.io.model_folder import load_trained_model, save_trained_model

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
