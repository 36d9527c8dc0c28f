"""Backbone registry, safe weight loading, device selection and the common SAM model wrapper."""

from samtune.models.builders import build_model, build_tiny_model, load_state_into
from samtune.models.device import describe_devices, resolve_device
from samtune.models.registry import (
    BACKBONES,
    DEFAULT_BACKBONE,
    BackboneFamily,
    BackboneSpec,
    PixelNorm,
    get_backbone,
    list_backbones,
)
from samtune.models.sam_model import SamModel
from samtune.models.weights import (
    download_weights,
    load_checkpoint,
    locate_weights,
    save_state_dict,
    sha256_file,
    verify_sha256,
    weights_cache_dir,
    weights_status,
)

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "BackboneFamily",
    "BackboneSpec",
    "PixelNorm",
    "SamModel",
    "build_model",
    "build_tiny_model",
    "describe_devices",
    "download_weights",
    "get_backbone",
    "list_backbones",
    "load_checkpoint",
    "load_state_into",
    "locate_weights",
    "resolve_device",
    "save_state_dict",
    "sha256_file",
    "verify_sha256",
    "weights_cache_dir",
    "weights_status",
]
