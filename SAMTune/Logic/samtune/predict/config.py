"""What a prediction is asked to do: the prediction settings and the user's prompts, as plain dataclasses.

Importing this module costs no PyTorch: the Slicer module and the job documents use it before torch
is installed. Each field carries its help text (:func:`samtune.config_io.option`), so ``samtune
predict``'s options are generated from here (:mod:`samtune.cli.options`) and declared once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from samtune.config_io import option
from samtune.data.slicing import SliceConfig
from samtune.errors import ConfigurationError
from samtune.models.registry import Precision, Runtime


def parse_slice_range(text: str) -> tuple[int, int]:
    """``"10:40"`` -> ``(10, 40)`` (stop exclusive)."""
    try:
        start, stop = text.split(":")
        return int(start), int(stop)
    except ValueError:
        raise ValueError(f"expected START:STOP slice indices (stop exclusive), e.g. 10:40; got '{text}'") from None


def checked_refine(refine: int | None) -> int | None:
    """Automatic mode's refinement passes as an ``int`` (``None``: the model's own), or a clear error."""
    if refine is None:
        return None
    if not 0 <= int(refine) <= 3:
        raise ConfigurationError(f"refine must be 0..3 passes (or none given: the model's own), got {refine}.")
    return int(refine)


#: The automatic-mode decoder's default arithmetic, for whole volumes and for the Segment Editor's slices.
#: fp32: the int8 decoder ran warm predictions 1.20-1.22x as fast, but moved Dice by more than 0.005 (the bar
#: for a default) on 3 and 4 of 10 held-out volumes for the two models measured (``docs/benchmarks.md``).
DEFAULT_DECODER_PRECISION = Precision.FP32


@dataclass
class PredictConfig:
    """How to run prediction over a volume.

    Attributes:
        threshold: Probability above which a pixel is foreground, in (0, 1).
        batch_size: Slices encoded together; 1 is fastest on a CPU, larger batches pay on a GPU.
        slice_range: ``(start, stop)`` slice indices along the slice axis, stop exclusive;
            ``None`` for the whole volume.
        slices: Slicing axis, intensity normalisation and 2.5D option.
        label_value: Value written for foreground voxels in the output label map.
        runtime: Image-encoder runtime (:class:`~samtune.models.registry.Runtime`); the automatic-mode
            decoder runs in the same one.
        decoder_precision: Automatic mode under ONNX Runtime: ``int8`` runs an int8 copy of the mask
            decoder (:class:`~samtune.models.registry.Precision`; fp32 when the copy fails its check).
        slice_search: Automatic mode only. ``0`` segments every slice. ``n >= 2`` first segments
            every ``n``-th slice, then grows outwards from each slice where the structure was found
            until the structure ends, so slices far from the structure are never encoded (see
            :func:`samtune.predict.volume.search_slices`). A structure that shows on fewer than
            ``n`` consecutive slices between two sampled slices can be missed.
        largest_component: Keep only the largest 3D connected component.
        presence_threshold: Automatic mode: drop the mask of a slice whose presence probability is
            below this. ``None`` = the model's own threshold (chosen on validation data when it was
            trained with a presence head; models without one keep every mask); ``0`` = keep every mask.
        refine: Automatic mode: self-prompting passes, each feeding the box around a slice's mask
            back to a decoder (decoder time only): the pretrained one the model kept, or its own
            when it was trained to answer boxes. ``None`` = the model's own (2 for models refined
            by their pretrained decoder, 1 for models trained to answer boxes, 0 for older models).
    """

    threshold: float = option(0.5, help="foreground probability threshold")
    batch_size: int = option(1, help="slices per batch (larger pays on a GPU)")
    slice_range: tuple[int, int] | None = option(
        None, flag="--slices", parse=parse_slice_range, metavar="START:STOP",
        help="only slices START:STOP along the slice axis (stop exclusive)",
    )  # fmt: skip
    slices: SliceConfig = field(default_factory=SliceConfig)
    label_value: int = option(1, help="value written for the structure")
    runtime: Runtime = option(
        Runtime.AUTO, help="image-encoder runtime: auto (ONNX Runtime on a CPU when installed, else PyTorch)"
    )
    decoder_precision: Precision = option(
        DEFAULT_DECODER_PRECISION,
        help="automatic mode under ONNX Runtime: int8 runs an int8 copy of the mask decoder (fp32 if its check fails)",
    )
    slice_search: int = option(
        0, metavar="STEP",
        help="automatic mode: segment every STEP-th slice first, then only the slices around the structure "
        "(0 = every slice)",
    )  # fmt: skip
    largest_component: bool = option(
        False, help="keep only the largest 3D connected component (one connected structure: removes stray islands)"
    )
    presence_threshold: float | None = option(
        None, metavar="P",
        help="automatic mode: drop a slice's mask when the model's presence probability is below P "
        "(default: the model's own, chosen on validation; 0 = keep every mask)",
    )  # fmt: skip
    refine: int | None = option(
        None, metavar="N",
        help="automatic mode: refinement passes that feed the box around each mask back to a decoder, the "
        "pretrained one the model kept or its own (default: the model's own, 2 or 1; 0 = off)",
    )  # fmt: skip

    def __post_init__(self) -> None:
        self.runtime = Runtime.parse(self.runtime, what="encoder runtime")
        self.decoder_precision = Precision.parse(self.decoder_precision, what="decoder precision")
        if self.presence_threshold is not None and not 0.0 <= float(self.presence_threshold) < 1.0:
            raise ConfigurationError(
                f"presence_threshold must be in [0, 1) (0 keeps every mask), got {self.presence_threshold}."
            )
        self.refine = checked_refine(self.refine)
        if int(self.slice_search) < 0 or int(self.slice_search) == 1:
            raise ConfigurationError(
                f"slice_search must be 0 (segment every slice) or a step of at least 2, got {self.slice_search}."
            )
        if not 0.0 < float(self.threshold) < 1.0:
            raise ConfigurationError(f"threshold must be a probability strictly between 0 and 1, got {self.threshold}.")
        if int(self.batch_size) < 1:
            raise ConfigurationError(f"batch_size must be at least 1, got {self.batch_size}.")
        if not 1 <= int(self.label_value) <= 65535:
            raise ConfigurationError(f"label_value must be in 1..65535, got {self.label_value}.")
        if self.slice_range is not None:
            if len(self.slice_range) != 2:
                raise ConfigurationError(
                    f"slice_range must be [start, stop] (stop exclusive), got {self.slice_range!r}. Give two indices."
                )
            start, stop = (int(v) for v in self.slice_range)
            if start < 0 or stop <= start:
                raise ConfigurationError(
                    f"slice_range must be (start, stop) with 0 <= start < stop, got {self.slice_range}."
                )
            self.slice_range = (start, stop)


@dataclass
class PromptSpec:
    """The user's prompts for a whole volume, in voxel indices of the input image.

    Attributes:
        box: 3D boxes ``[i0, j0, k0, i1, j1, k1]`` (inclusive), each applied on every slice it covers.
        point: Positive points ``[i, j, k]`` (inside the structure).
        neg_point: Negative points ``[i, j, k]`` (outside the structure).
    """

    box: list[list[float]] = option(
        default_factory=list, nargs=6, repeat=True, metavar=("I0", "J0", "K0", "I1", "J1", "K1"),
        help="3D box in voxel indices (inclusive), applied on every slice it covers; repeatable",
    )  # fmt: skip
    point: list[list[float]] = option(
        default_factory=list, nargs=3, repeat=True, metavar=("I", "J", "K"),
        help="positive point (inside the structure) in voxel indices; repeatable",
    )  # fmt: skip
    neg_point: list[list[float]] = option(
        default_factory=list, nargs=3, repeat=True, metavar=("I", "J", "K"),
        help="negative point (outside the structure) in voxel indices; repeatable",
    )  # fmt: skip

    def __post_init__(self) -> None:
        for name, size, layout in (("box", 6, "[i0, j0, k0, i1, j1, k1]"), ("point", 3, "[i, j, k]"),
                                   ("neg_point", 3, "[i, j, k]")):  # fmt: skip
            for item in getattr(self, name):
                if not isinstance(item, (list, tuple)) or len(item) != size:
                    raise ConfigurationError(f"Each prompts.{name} is {layout} in voxel indices, got {item!r}.")

    @property
    def is_empty(self) -> bool:
        return not (self.box or self.point or self.neg_point)


__all__ = ["DEFAULT_DECODER_PRECISION", "PredictConfig", "PromptSpec", "checked_refine", "parse_slice_range"]
