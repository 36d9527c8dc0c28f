"""Intensity normalisation of a whole volume to 0..255 (CT windows, MR percentiles, explicit window).

Statistics are computed over the whole volume, never per slice, so every slice of a volume is
mapped the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from samtune.config_io import option
from samtune.enums import StrEnum
from samtune.errors import ConfigurationError, DataError, unknown_name


class IntensityMode(StrEnum):
    """How to map raw intensities to 0..255."""

    AUTO = "auto"  # uint8/RGB kept; CT-like ranges -> soft-tissue window; otherwise percentiles
    CT = "ct"  # a CT window preset (Hounsfield units)
    PERCENTILE = "percentile"  # clip to [p_low, p_high] percentiles of the volume (MR)
    WINDOW = "window"  # explicit [low, high]
    NONE = "none"  # values are already 0..255


#: CT window presets as (level, width) in Hounsfield units.
CT_PRESETS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "abdomen": (60.0, 400.0),
    "liver": (60.0, 160.0),
    "mediastinum": (50.0, 350.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}


@dataclass
class IntensityConfig:
    """Intensity normalisation settings.

    Attributes:
        mode: One of :class:`IntensityMode`.
        ct_preset: Window preset name for ``ct`` mode (see :data:`CT_PRESETS`).
        low_percentile: Lower clip percentile for ``percentile`` mode, in [0, 100).
        high_percentile: Upper clip percentile, in (low, 100].
        window_low: Lower bound for ``window`` mode.
        window_high: Upper bound for ``window`` mode.
    """

    mode: IntensityMode = option(
        IntensityMode.AUTO,
        flag="--intensity",
        help="intensity normalisation: auto, ct, percentile (0.5-99.5), window, none",
    )
    ct_preset: str = option("soft_tissue", help="CT window preset for --intensity ct")
    low_percentile: float = 0.5
    high_percentile: float = 99.5
    window_low: float | None = option(
        None, flag="--window", nargs=2, metavar=("LOW", "HIGH"), pair="window_high",
        help="explicit window for --intensity window",
    )  # fmt: skip
    window_high: float | None = None

    def __post_init__(self) -> None:
        self.mode = IntensityMode.parse(self.mode, what="intensity mode")
        if self.ct_preset not in CT_PRESETS:
            raise unknown_name("CT window preset", self.ct_preset, CT_PRESETS)
        if not 0.0 <= self.low_percentile < self.high_percentile <= 100.0:
            raise ConfigurationError(
                f"Percentiles must satisfy 0 <= low < high <= 100, got {self.low_percentile} and "
                f"{self.high_percentile}."
            )
        if self.mode is IntensityMode.WINDOW:
            if self.window_low is None or self.window_high is None:
                raise ConfigurationError(
                    "Intensity mode 'window' needs window_low and window_high (--window LOW HIGH)."
                )
            if not self.window_low < self.window_high:
                raise ConfigurationError(
                    f"Window must have low < high, got low {self.window_low}, high {self.window_high}."
                )

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dictionary."""
        return asdict(self)


def _looks_like_ct(array: np.ndarray) -> bool:
    return bool(array.min() < -500 and array.max() > 500)


def intensity_bounds(array: np.ndarray, config: IntensityConfig) -> tuple[float, float] | None:
    """The ``(low, high)`` window applied to ``array``, or ``None`` when values are kept as is."""
    mode = config.mode
    if mode is IntensityMode.AUTO:
        if array.dtype == np.uint8 or (array.ndim == 4 and array.shape[-1] in (3, 4)):
            return None
        mode = IntensityMode.CT if _looks_like_ct(array) else IntensityMode.PERCENTILE
    if mode is IntensityMode.NONE:
        return None
    if mode is IntensityMode.CT:
        level, width = CT_PRESETS[config.ct_preset]
        return level - width / 2.0, level + width / 2.0
    if mode is IntensityMode.WINDOW:
        return float(config.window_low), float(config.window_high)  # type: ignore[arg-type]
    low, high = np.percentile(array, [config.low_percentile, config.high_percentile])
    return float(low), float(high)


def normalize_intensity(array: np.ndarray, config: IntensityConfig | None = None) -> np.ndarray:
    """Map a whole volume to float32 values in [0, 255].

    Args:
        array: ``(K, J, I)`` or ``(K, J, I, C)`` voxels of any numeric dtype.
        config: Normalisation settings (default: ``auto``).

    Raises:
        DataError: The image contains NaN or infinite values.
    """
    config = config or IntensityConfig()
    values = np.asarray(array)
    if values.dtype.kind not in "uifb":
        raise DataError(f"Image voxels must be numbers, got dtype {values.dtype}.")
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise DataError("The image contains NaN or infinite values. Replace them (e.g. by the background value) first.")
    bounds = intensity_bounds(values, config)
    data = values.astype(np.float32, copy=False)
    if bounds is None:
        return np.clip(data, 0.0, 255.0)
    low, high = bounds
    if high <= low:
        return np.zeros_like(data, dtype=np.float32)
    return ((np.clip(data, low, high) - low) * (255.0 / (high - low))).astype(np.float32)


class PixelNorm(StrEnum):
    """How a backbone expects pixel values (a property of its pretraining)."""

    SAM = "sam"  # (x - ImageNet mean) / std on 0..255 RGB
    MINMAX = "minmax"  # per-image (x - min) / (max - min) to [0, 1] (MedSAM, LiteMedSAM)
