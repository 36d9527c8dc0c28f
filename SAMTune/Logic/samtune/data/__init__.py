"""Volume -> slice pipeline: reading, slicing, intensity, resizing and the exact inverse."""

from typing import TYPE_CHECKING

from samtune._lazy import lazy_exports

if TYPE_CHECKING:
    from samtune.data.image_io import read_label, read_volume, segment_names, write_label, write_volume
    from samtune.data.intensity import CT_PRESETS, IntensityConfig, IntensityMode, PixelNorm, normalize_intensity
    from samtune.data.labels import (
        EmptySlicePolicy,
        labelled_slices_from_label,
        select_slices,
        structure_masks,
        validate_structures,
    )
    from samtune.data.phantom import make_phantom, make_picture_phantom, write_phantom_cases, write_picture_cases
    from samtune.data.pipeline import SliceGrid, prepare_slices, slice_grid, three_channels
    from samtune.data.slicing import (
        SliceAxis,
        SliceConfig,
        assemble_slices,
        default_slice_axis,
        extract_slices,
        resolve_axis,
        slice_spacing,
    )
    from samtune.data.split import split_cases
    from samtune.data.transforms import ResizeLongestSide, normalize_pixels
    from samtune.data.volume import Geometry, Volume, require_integer_labels

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
