"""Files SAMTune writes: trained model folders (adapter weights + model card)."""

from samtune.io.model_folder import (
    MODEL_CARD,
    MODEL_WEIGHTS,
    load_trained_model,
    read_model_card,
    save_trained_model,
)

__all__ = ["MODEL_CARD", "MODEL_WEIGHTS", "load_trained_model", "read_model_card", "save_trained_model"]
