"""Trained models on disk: the model folder (adapter weights + model card) and the per-user model library."""

from typing import TYPE_CHECKING

from samtune._lazy import lazy_exports

if TYPE_CHECKING:
    from samtune.library.card import MODEL_CARD, MODEL_WEIGHTS, read_model_card
    from samtune.library.model_folder import backbone_hash, load_trained_model, save_trained_model
    from samtune.library.user_library import ModelEntry, ModelLibrary, check_model_name, default_models_dir

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
