"""Zero-shot and fine-tuned prediction on volumes."""

from samtune.predict.postprocess import keep_largest_component
from samtune.predict.prompts import (
    SlicePrompt,
    box_prompts_from_ijk,
    boxes_from_label,
    merge_prompts,
    point_prompts_from_ijk,
)
from samtune.predict.volume import PredictConfig, ProgressCallback, predict_volume, search_slices

__all__ = [
    "PredictConfig",
    "ProgressCallback",
    "SlicePrompt",
    "box_prompts_from_ijk",
    "boxes_from_label",
    "keep_largest_component",
    "merge_prompts",
    "point_prompts_from_ijk",
    "predict_volume",
    "search_slices",
]
