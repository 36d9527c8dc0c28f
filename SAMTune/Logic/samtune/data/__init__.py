"""Volume -> slice pipeline: reading, slicing, intensity, resizing and the exact inverse."""

from samtune.data.intensity import CT_PRESETS, IntensityConfig, IntensityMode, normalize_intensity
from samtune.data.io import read_label, read_volume, segment_names, write_label, write_volume
from samtune.data.labels import (
    EmptySlicePolicy,
    labelled_slices_from_label,
    select_slices,
    structure_masks,
    validate_structures,
)
from samtune.data.phantom import make_phantom, write_phantom_cases
from samtune.data.pipeline import SliceConfig, SliceGrid, prepare_slices, slice_grid, three_channels
from samtune.data.slicing import (
    SliceAxis,
    assemble_slices,
    default_slice_axis,
    extract_slices,
    resolve_axis,
    slice_spacing,
)
from samtune.data.split import split_cases
from samtune.data.transforms import PixelNorm, ResizeLongestSide, normalize_pixels
from samtune.data.volume import Geometry, Volume, require_integer_labels

__all__ = [
    "CT_PRESETS",
    "EmptySlicePolicy",
    "Geometry",
    "IntensityConfig",
    "IntensityMode",
    "PixelNorm",
    "ResizeLongestSide",
    "SliceAxis",
    "SliceConfig",
    "SliceGrid",
    "Volume",
    "assemble_slices",
    "default_slice_axis",
    "extract_slices",
    "labelled_slices_from_label",
    "make_phantom",
    "write_phantom_cases",
    "normalize_intensity",
    "normalize_pixels",
    "prepare_slices",
    "read_label",
    "read_volume",
    "require_integer_labels",
    "resolve_axis",
    "segment_names",
    "select_slices",
    "slice_grid",
    "slice_spacing",
    "split_cases",
    "structure_masks",
    "three_channels",
    "validate_structures",
    "write_label",
    "write_volume",
]
