"""Every backbone family builds as a tiny model, predicts with any prompt, and reloads exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from samtune.models import SamModel, build_model, load_checkpoint, load_state_into, save_state_dict

FAMILIES = ["sam_vit_b", "mobilesam_vit_t", "litemedsam"]


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request: pytest.FixtureRequest) -> SamModel:
    torch.manual_seed(0)
    return build_model(request.param, tiny=True)


def _images(model: SamModel, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, model.input_size, model.input_size, generator=torch.Generator().manual_seed(1))


def test_forward_with_boxes_points_and_no_prompt(tiny: SamModel) -> None:
    images = _images(tiny)
    size = tiny.input_size
    with torch.no_grad():
        embeddings = tiny.encode(images)
        boxes = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.3, 0.2, 0.9, 0.8]]) * size
        by_box, iou = tiny.decode(embeddings, boxes=boxes)
        points = (torch.tensor([[[0.5, 0.5]], [[0.3, 0.7]]]) * size, torch.tensor([[1], [0]]))
        by_point, _ = tiny.decode(embeddings, points=points)
        automatic, _ = tiny.decode(embeddings)
        multi, multi_iou = tiny.decode(embeddings, boxes=boxes, multimask_output=True)
    low_res = 4 * embeddings.shape[-1]
    for logits in (by_box, by_point, automatic):
        assert logits.shape == (2, 1, low_res, low_res)
        assert torch.isfinite(logits).all()
    assert iou.shape == (2, 1) and multi.shape == (2, 3, low_res, low_res) and multi_iou.shape == (2, 3)
    assert not torch.equal(by_box, automatic)  # the prompt changes the answer
    assert tiny.upscale_logits(by_box).shape == (2, 1, size, size)


def test_batch_of_images_with_one_box_each_equals_one_by_one(tiny: SamModel) -> None:
    images = _images(tiny, batch=3)
    boxes = torch.tensor([[10.0, 12, 60, 70], [5, 5, 40, 90], [30, 20, 100, 110]])
    with torch.no_grad():
        embeddings = tiny.encode(images)
        batched, _ = tiny.decode(embeddings, boxes=boxes)
        single = torch.cat([tiny.decode(embeddings[i : i + 1], boxes=boxes[i : i + 1])[0] for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-4)


def test_decode_matches_the_official_mask_decoder_for_one_image(tiny: SamModel) -> None:
    image = _images(tiny, batch=1)
    box = torch.tensor([[10.0, 12, 60, 70]])
    with torch.no_grad():
        embedding = tiny.encode(image)
        ours, our_iou = tiny.decode(embedding, boxes=box)
        sparse, dense = tiny.prompt_encoder(points=None, boxes=box[:, None], masks=None)
        official, official_iou = tiny.mask_decoder(
            image_embeddings=embedding,
            image_pe=tiny.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
    torch.testing.assert_close(ours, official, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(our_iou, official_iou, rtol=1e-4, atol=1e-4)


def test_save_and_reload_is_bit_identical(tiny: SamModel, tmp_path: Path) -> None:
    path = save_state_dict(tiny.state_dict(), tmp_path / "model.safetensors")
    torch.manual_seed(123)  # a fresh model with other random weights
    fresh = build_model(tiny.name, tiny=True)
    images = _images(tiny, batch=1)
    box = torch.tensor([[8.0, 8, 50, 50]])
    with torch.no_grad():
        before = fresh(images, boxes=box)
        load_state_into(fresh, load_checkpoint(path), source=str(path), backbone=tiny.name)
        fresh.eval()
        after = fresh(images, boxes=box)
        expected = tiny(images, boxes=box)
    assert not torch.equal(before, expected)
    assert torch.equal(after, expected)
    assert not list(tmp_path.glob("*.part"))
