"""One wrapper around every SAM-style backbone: image encoder, prompt encoder, mask decoder.

Coordinates given to :meth:`SamModel.decode` are in *model-input pixels* (the resized, padded
``S x S`` image), ``x`` = column, ``y`` = row, pixel indices (SAM adds 0.5 for the centre).
Boxes are ``XYXY``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from samtune.models.registry import BackboneFamily, PixelNorm

#: Probability a binary mask prompt gives its outside (and one minus it, its inside).
MASK_PROMPT_EPS = 1e-3


class SamModel(nn.Module):
    """Image encoder + prompt encoder + mask decoder, with batch-correct decoding.

    The official ``MaskDecoder.forward`` repeats the image embedding once per prompt, which is
    right for one image with many prompts but wrong for a batch of images with one prompt each.
    :meth:`decode` runs the same decoder modules with one embedding per batch item instead.

    Args:
        image_encoder: Maps ``Bx3xSxS`` normalised images to ``BxCxHexWe`` embeddings.
        prompt_encoder: SAM ``PromptEncoder``.
        mask_decoder: SAM ``MaskDecoder``.
        name: Backbone name (registry key).
        family: Architecture family.
        input_size: ``S``, the side of the square model input.
        pixel_norm: Pixel normalisation the encoder expects.
        tiny: Whether this is a tiny random test configuration.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: nn.Module,
        mask_decoder: nn.Module,
        *,
        name: str,
        family: BackboneFamily,
        input_size: int,
        pixel_norm: PixelNorm,
        tiny: bool = False,
    ) -> None:
        super().__init__()
        #: A tiny randomly initialised test configuration (no pretrained weights).
        self.tiny = bool(tiny)
        #: The seed a tiny configuration was built from (:func:`~samtune.models.builders.build_tiny_model`).
        self.tiny_seed: int | None = None
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.name = name
        self.family = BackboneFamily.parse(family)
        self.input_size = int(input_size)
        self.pixel_norm = PixelNorm.parse(pixel_norm)
        #: A learnable automatic-mode prompt (BLO-SAM), used when no box or point is given.
        self.learned_prompt: nn.Module | None = None
        #: Automatic mode: the presence probability (sigmoid of the IoU head) below which a slice's
        #: mask is dropped; set for models trained with a presence head, ``None`` otherwise.
        self.presence_threshold: float | None = None
        #: Automatic mode: self-prompting passes (the box around the mask fed back) by default;
        #: 1 for models trained to answer boxes too, 2 for models refined by :attr:`box_decoder`.
        self.refine_passes: int = 0
        #: The backbone's own prompt encoder and mask decoder, frozen before fine-tuning
        #: (:meth:`keep_box_decoder`): refinement passes ask it, given the box around the fine-tuned
        #: model's mask; ``None`` = refinement asks the fine-tuned decoder.
        self.box_decoder: SamModel | None = None

    def keep_box_decoder(self) -> SamModel:
        """Freeze a copy of the prompt encoder and mask decoder as they are now as :attr:`box_decoder`.

        Called before fine-tuning, it keeps the pretrained decoder, which answers a box the way it
        was trained to, for refining the automatic masks of a decoder fine-tuned without boxes.
        """
        import copy

        if self.box_decoder is None:
            reference = SamModel(
                nn.Identity(), copy.deepcopy(self.prompt_encoder), copy.deepcopy(self.mask_decoder),
                name=self.name, family=self.family, input_size=self.input_size, pixel_norm=self.pixel_norm,
                tiny=self.tiny,
            )  # fmt: skip
            reference.requires_grad_(False)
            self.box_decoder = reference.to(self.device).eval()
        return self.box_decoder

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.parameters()).device

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``Bx3xSxS`` normalised images -> ``BxCxHexWe`` image embeddings."""
        return self.image_encoder(images)

    def prompt_embeddings(
        self,
        batch_size: int,
        *,
        boxes: torch.Tensor | None = None,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        dense_prompt: torch.Tensor | None = None,
        mask_prompt: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse ``BxNxC`` and dense ``BxCxHexWe`` prompt embeddings for ``batch_size`` items.

        With no box and no point the sparse embedding is empty (``Bx0xC``) and the dense one is the
        learned ``no_mask_embed`` (automatic mode), or the model's :attr:`learned_prompt` when it has
        one; ``mask_prompt`` (``Bx1xHmxWm`` logits, see :meth:`mask_input`) goes through SAM's mask
        downscaling instead; ``dense_prompt`` replaces the dense embedding.
        """
        nothing = boxes is None and points is None and mask_prompt is None and dense_prompt is None
        if nothing and self.learned_prompt is not None:
            return self.learned_prompt(batch_size)  # type: ignore[no-any-return]
        if boxes is not None and boxes.ndim == 2:
            boxes = boxes[:, None, :]
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_prompt)
        if sparse.shape[0] != batch_size:
            sparse = sparse.expand(batch_size, -1, -1)
        if dense_prompt is not None:
            dense = dense_prompt
        if dense.shape[0] != batch_size:
            dense = dense.expand(batch_size, -1, -1, -1)
        return sparse, dense

    def decode(
        self,
        image_embeddings: torch.Tensor,
        *,
        boxes: torch.Tensor | None = None,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        dense_prompt: torch.Tensor | None = None,
        mask_prompt: torch.Tensor | None = None,
        multimask_output: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict masks, one prompt set per batch item.

        Args:
            image_embeddings: ``BxCxHexWe`` from :meth:`encode`.
            boxes: ``Bx4`` XYXY boxes in model-input pixels, or ``None``.
            points: ``(coords BxNx2, labels BxN)``; label 1 inside, 0 outside, -1 padding.
            dense_prompt: ``BxCxHexWe`` or ``1xCxHexWe`` dense embedding replacing ``no_mask_embed``.
            mask_prompt: ``Bx1xHmxWm`` mask logits (a previous mask, a lasso's interior; see
                :meth:`mask_input`), or ``None``.
            multimask_output: Return SAM's three masks instead of one.

        Returns:
            ``(low_res_logits BxMxHlxWl, iou_predictions BxM)`` with ``M`` = 1 or 3 and
            ``Hl = 4 * He`` (256 for a 1024 input, 64 for LiteMedSAM's 256).
        """
        batch = image_embeddings.shape[0]
        sparse, dense = self.prompt_embeddings(
            batch, boxes=boxes, points=points, dense_prompt=dense_prompt, mask_prompt=mask_prompt
        )
        masks, iou = self._predict_masks(image_embeddings, sparse.to(image_embeddings.dtype), dense)
        selected = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, selected], iou[:, selected]

    def _predict_masks(
        self, embeddings: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        decoder: Any = self.mask_decoder  # segment-anything's MaskDecoder (untyped submodules)
        batch = embeddings.shape[0]
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse], dim=1)
        src = embeddings + dense
        prompt_encoder: Any = self.prompt_encoder
        image_pe = prompt_encoder.get_dense_pe().to(src.dtype)
        pos = image_pe.expand(batch, -1, -1, -1)
        _, channels, height, width = src.shape
        hidden, src = decoder.transformer(src, pos, tokens)
        iou_token = hidden[:, 0, :]
        mask_token_out = hidden[:, 1 : 1 + decoder.num_mask_tokens, :]
        upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(batch, channels, height, width))
        hyper = torch.stack(
            [mlp(mask_token_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
        )
        _, up_channels, up_h, up_w = upscaled.shape
        masks = (hyper @ upscaled.reshape(batch, up_channels, up_h * up_w)).reshape(batch, -1, up_h, up_w)
        return masks, decoder.iou_prediction_head(iou_token)

    @property
    def mask_input_size(self) -> tuple[int, int]:
        """``(Hm, Wm)`` of a mask prompt: four times the image embedding's side (256 for SAM at 1024)."""
        prompt_encoder: Any = self.prompt_encoder
        return tuple(int(v) for v in prompt_encoder.mask_input_size)  # type: ignore[return-value]

    def mask_input(self, masks: torch.Tensor) -> torch.Tensor:
        """``BxSxS`` binary masks in the model-input frame -> ``Bx1xHmxWm`` mask-prompt logits.

        SAM's mask input is the logits of an earlier prediction; a binary mask becomes the logits of
        probabilities 0.999 inside and 0.001 outside (about +-6.9), averaged down to the mask-input size.
        """
        inside = masks[:, None].float().to(self.device)
        small = F.interpolate(inside, size=self.mask_input_size, mode="area")
        return torch.logit(small.clamp(MASK_PROMPT_EPS, 1 - MASK_PROMPT_EPS))

    def upscale_logits(self, low_res: torch.Tensor) -> torch.Tensor:
        """``BxMxHlxWl`` logits -> ``BxMxSxS`` at the model input size (bilinear)."""
        return F.interpolate(low_res, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)

    def forward(
        self,
        images: torch.Tensor,
        *,
        boxes: torch.Tensor | None = None,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        dense_prompt: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``Bx3xSxS`` images (+ prompts) -> ``Bx1xHlxWl`` low-resolution mask logits."""
        logits, _ = self.decode(self.encode(images), boxes=boxes, points=points, dense_prompt=dense_prompt)
        return logits
