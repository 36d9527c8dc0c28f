"""Method-specific behaviour that the reference code got wrong, pinned."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from samtune.errors import ConfigurationError
from samtune.models import build_model
from samtune.peft import FineTuneConfig, LoRAConfig, apply_finetuning, inject_lora, peft_wrappers
from samtune.peft.adapter import AdapterConfig, ParallelAdapter, SerialAdapter, inject_adapters
from samtune.peft.conv_lora import ConvLoRAQKV
from samtune.peft.lora import FusedQKVLoRA
from samtune.peft.targets import encoder_blocks, select_blocks


def test_tinyvit_qv_lora_touches_exactly_q_and_v_of_every_head() -> None:
    model = build_model("litemedsam", tiny=True)
    inject_lora(model, LoRAConfig(encoder_projections=["q", "v"], decoder=False))
    wrappers = [w for _, w in peft_wrappers(model) if isinstance(w, FusedQKVLoRA)]
    assert wrappers
    for wrapper in wrappers:
        attention = next(m for m in model.modules() if getattr(m, "qkv", None) is wrapper)
        heads, key_dim, value_dim = attention.num_heads, attention.key_dim, attention.d
        with torch.no_grad():
            for p in wrapper.projections:
                wrapper.lora_B[p].weight.fill_(1.0)
        x = torch.randn(3, 5, wrapper.base_layer.in_features)
        delta = wrapper.delta(x).abs().sum(dim=(0, 1))
        # TinyViT's own split of the qkv output: per head [q (key_dim), k (key_dim), v (d)]
        per_head = delta.view(heads, 2 * key_dim + value_dim)
        q, k, v = per_head.split([key_dim, key_dim, value_dim], dim=1)
        assert (q > 0).all() and (v > 0).all(), "every q and v channel of every head is adapted"
        assert (k == 0).all(), "no k channel is touched"


def test_vit_lora_on_q_k_v_layout_and_block_selection() -> None:
    model = build_model("sam_vit_b", tiny=True)
    reports = inject_lora(model, LoRAConfig(encoder_projections=["k"], encoder_blocks=[-1], decoder=False))
    assert reports[0].wrapped == ["image_encoder.blocks.1.attn.qkv"]
    wrapper = model.image_encoder.blocks[1].attn.qkv
    with torch.no_grad():
        wrapper.lora_B["k"].weight.fill_(1.0)
    delta = wrapper.delta(torch.randn(2, 4, 4, 32)).abs().sum(dim=(0, 1, 2))
    dim = 32
    assert (delta[:dim] == 0).all() and (delta[dim : 2 * dim] > 0).all() and (delta[2 * dim :] == 0).all()


def test_decoder_lora_wraps_q_and_v_of_all_decoder_attention() -> None:
    model = build_model("sam_vit_b", tiny=True)
    reports = inject_lora(model, LoRAConfig(encoder=False))
    wrapped = reports[0].wrapped
    # 2 blocks x (self, token->image, image->token) + final attention, each q_proj and v_proj
    assert len(wrapped) == 14
    assert "mask_decoder.transformer.final_attn_token_to_image.v_proj" in wrapped
    assert not any(name.endswith("k_proj") for name in wrapped)


def test_adapter_blocks_default_to_first_two_and_last_two() -> None:
    assert select_blocks(12, "ends") == [0, 1, 10, 11]
    assert select_blocks(32, "ends") == [0, 1, 30, 31]  # ViT-H: not 0, 1, 10, 11
    assert select_blocks(3, "ends") == [0, 1, 2]
    with pytest.raises(ConfigurationError, match="blocks 0..11"):
        select_blocks(12, [12])
    model = build_model("litemedsam", tiny=True)
    n_blocks = len(encoder_blocks(model))
    reports = inject_adapters(model, AdapterConfig())
    serial_encoder = [w for w in reports[0].wrapped]
    assert len(serial_encoder) == len(select_blocks(n_blocks, "ends"))


def test_decoder_adapters_have_separate_weights_per_stream() -> None:
    model = build_model("sam_vit_b", tiny=True)
    inject_adapters(model, AdapterConfig(encoder=False))
    layer = model.mask_decoder.transformer.layers[0]
    token_side, image_side = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    assert isinstance(token_side, SerialAdapter) and isinstance(image_side, SerialAdapter)
    assert isinstance(layer.mlp, ParallelAdapter) and layer.mlp.scale == 0.5
    assert token_side.adapter.down.weight.data_ptr() != image_side.adapter.down.weight.data_ptr()
    assert token_side.adapter.down.out_features == 8  # 0.25 x 32 (the tiny decoder width)


def test_reinitialised_heads_stay_trainable_with_any_method() -> None:
    model = build_model("sam_vit_b", tiny=True)
    apply_finetuning(
        model,
        FineTuneConfig(method="adapter", scope="decoder"),
        reinitialised=["mask_decoder.iou_prediction_head"],
    )
    assert all(p.requires_grad for p in model.mask_decoder.iou_prediction_head.parameters())
    assert not any(p.requires_grad for p in model.mask_decoder.output_upscaling.parameters())


def test_conv_lora_gate_learns_from_the_segmentation_loss_alone() -> None:
    torch.manual_seed(0)
    base = nn.Linear(16, 48)
    layer = ConvLoRAQKV(base, rank=4, alpha=8.0, scales=[1, 2, 3], noise=False)
    with torch.no_grad():  # as after a few steps: a non-zero up-projection and router
        layer.lora_B.weight.normal_(0, 0.1)
        layer.router.weight.normal_(0, 0.1)
    x = torch.randn(2, 6, 6, 16)  # SAM ViT style (B, H, W, C) token grid
    task_loss = layer(x).pow(2).mean()  # no balance loss involved
    task_loss.backward()
    assert layer.router.weight.grad is not None and layer.router.weight.grad.abs().sum() > 0
    assert float(layer.balance_loss.detach()) >= 0.0


def test_conv_lora_handles_tinyvit_windows_and_rejects_non_square_grids() -> None:
    layer = ConvLoRAQKV(nn.Linear(8, 24), rank=2, alpha=2.0, scales=[1, 2])
    out = layer(torch.randn(5, 49, 8))  # (windows, 7x7 tokens, C)
    assert out.shape == (5, 49, 24)
    assert int(layer.last_counts.sum()) == 5
    with pytest.raises(ConfigurationError, match="square token grids"):
        layer(torch.randn(2, 10, 8))


def test_lora_config_validation() -> None:
    with pytest.raises(ConfigurationError, match="rank"):
        LoRAConfig(rank=0)
    with pytest.raises(ConfigurationError, match="subset of q, k, v"):
        LoRAConfig(encoder_projections=["x"])
    with pytest.raises(ConfigurationError, match="Did you mean 'adapter'"):
        FineTuneConfig(method="adaptor")


def test_trainable_parameter_counts_match_the_hand_computation() -> None:
    # LiteMedSAM's real architecture (random weights, no file needed): decoder width 256, cross-attention
    # internal width 128. LoRA rank r adds r * (in + out) per wrapped projection (q and v):
    #   self-attention   2 layers x 2 proj x 4 x (256 + 256) =  8,192
    #   cross-attention  4 attns  x 2 proj x 4 x (256 + 128) = 12,288
    #   final attention  1 attn   x 2 proj x 4 x (256 + 128) =  3,072
    model = build_model("litemedsam", pretrained=False)
    apply_finetuning(model, FineTuneConfig(method="lora", scope="decoder"))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 8_192 + 12_288 + 3_072
    tiny = build_model("sam_vit_b", tiny=True)
    reports = apply_finetuning(tiny, FineTuneConfig(method="adapter", scope="decoder"))
    # tiny decoder width 32 -> bottleneck 8: (32*8 + 8) + (8*32 + 32) = 552 per adapter, 3 per layer, 2 layers
    assert sum(r.trainable_parameters for r in reports) == 552 * 3 * 2
