"""Zero-shot and fine-tuned prediction on volumes."""

from typing import TYPE_CHECKING

from samtune._lazy import lazy_exports

if TYPE_CHECKING:
    from samtune.predict.config import PredictConfig, PromptSpec
    from samtune.predict.decode import decode_prompted
    from samtune.predict.postprocess import keep_largest_component
    from samtune.predict.user_prompts import (
        SlicePrompt,
        box_prompts_from_ijk,
        boxes_from_label,
        merge_prompts,
        point_prompts_from_ijk,
        prompts_from_spec,
    )
    from samtune.predict.volume import ProgressCallback, predict_volume, search_slices

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
