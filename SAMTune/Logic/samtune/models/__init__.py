"""Backbone registry, safe weight loading, device selection and the common SAM model wrapper."""

from typing import TYPE_CHECKING

from samtune._lazy import lazy_exports

if TYPE_CHECKING:
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

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
