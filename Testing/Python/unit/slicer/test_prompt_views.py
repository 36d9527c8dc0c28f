"""Every prompt type drawn in an axial-, sagittal- or coronal-aligned view of a rotated, anisotropic
volume (real MRML): world RAS -> the volume's IJK (Slicer's own matrices) -> the prompt book's slice
-> the slice pixel frame -> the model's input frame, and the mask equals the whole-volume path given
the same prompt in pixels."""

from __future__ import annotations

import numpy as np
import pytest
from SAMTuneLib import Geometry as geometry
from test_mrml_bridge import add_volume, ijk_to_ras, rotation

from samtune.data import make_phantom
from samtune.data.slicing import in_plane_components
from samtune.models import build_tiny_model
from samtune.predict import PredictConfig, SlicePrompt, predict_volume
from samtune.predict.prompt_book import PromptBook
from samtune.predict.session import SessionPool
from samtune.predict.strokes import lasso_mask, mask_bounding_box, scribble_points

SHAPE = (10, 24, 28)  # (K, J, I)


@pytest.fixture(scope="module")
def model():
    return build_tiny_model("litemedsam", seed=0).eval()


@pytest.fixture
def rotated(scene):
    image, _ = make_phantom(shape=SHAPE, seed=3)
    matrix = ijk_to_ras((0.7, 1.3, 2.9), (-20.0, 35.0, 11.0), rotation(35, 2) @ rotation(-25, 0))
    return add_volume(scene, image.array.astype(np.int16), matrix)


def view_aligned_with(node, axis: int) -> np.ndarray:
    """A SliceToRAS whose normal is the volume's direction across numpy ``axis`` (a view aligned with it)."""
    directions = geometry.ijkToRas(node, np.eye(3)) - geometry.ijkToRas(node, np.zeros(3))
    normal = directions[2 - axis] / np.linalg.norm(directions[2 - axis])
    helper = np.array([0.0, 0.0, 1.0]) if abs(normal[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    x = np.cross(helper, normal)
    x /= np.linalg.norm(x)
    view = np.eye(4)
    view[:3, 0], view[:3, 1], view[:3, 2] = x, np.cross(normal, x), normal
    return view


@pytest.mark.parametrize("axis", [0, 1, 2], ids=["axial-k", "coronal-j", "sagittal-i"])
def test_each_prompt_type_maps_from_a_view_to_the_model_frame(scene, rotated, model, axis):
    node = rotated
    assert geometry.sliceAxisOfView(node, view_aligned_with(node, axis)) == axis
    volume = geometry.volumeToCore(node)
    s = SHAPE[axis] // 2
    x_comp, y_comp = in_plane_components(axis)
    h, w = (n for a, n in enumerate(SHAPE) if a != axis)

    def on_slice(pixels):  # slice pixels (x, y) -> IJK on slice s -> world RAS, where the user's pointer was
        ijk = np.zeros((len(pixels), 3))
        ijk[:, x_comp], ijk[:, y_comp] = np.asarray(pixels, float).T
        ijk[:, 2 - axis] = s + 0.3  # inside the slice, off its centre
        return geometry.ijkToRas(node, ijk)

    point_px = [[w * 0.5, h * 0.5], [1.0, 1.0]]
    stroke_px = [[w * 0.2, h * 0.3], [w * 0.5, h * 0.35], [w * 0.7, h * 0.6]]
    outline_px = [[w * 0.15, h * 0.2], [w * 0.8, h * 0.2], [w * 0.8, h * 0.85], [w * 0.15, h * 0.85]]
    corners_px = [[w * 0.1, h * 0.15], [w * 0.9, h * 0.8]]
    book = PromptBook()
    to_ijk = lambda ras: geometry.rasToIjk(node, ras)  # noqa: E731 - what the effect does with each event
    for ras, label in zip(on_slice(point_px), (1, 0)):
        key = book.add_point(to_ijk(ras), label, axis=axis)
    assert key == (axis, s)
    assert book.add_scribble(to_ijk(on_slice(stroke_px)), 1, axis=axis) == (axis, s)
    assert book.set_lasso(to_ijk(on_slice(outline_px)), axis=axis) == (axis, s)
    assert book.set_box(*to_ijk(on_slice(corners_px)), axis=axis) == (axis, s)
    pool = SessionPool()
    session = pool.get("tiny", lambda: model, node.GetID(), lambda: volume, axis=axis)
    assert session.axis == axis and session.n_slices == SHAPE[axis]
    index, prompt = session.prompt_from_ijk(**_entry(book.prompts(axis, s)))
    assert index == s
    sampled = scribble_points(stroke_px)
    np.testing.assert_allclose(prompt.points, np.concatenate([point_px, sampled]), atol=1e-4)
    assert prompt.point_labels.tolist() == [1, 0] + [1] * len(sampled)
    interior = lasso_mask(outline_px, (h, w))
    np.testing.assert_array_equal(prompt.mask, interior)
    np.testing.assert_allclose(prompt.boxes, [[*corners_px[0], *corners_px[1]], mask_bounding_box(interior)], atol=1e-4)
    resize = session.grid().resize  # the model's frame: the longest side scaled to the input size
    assert max(resize.new_size) == model.input_size and resize.original_size == (h, w)
    scale = np.array([resize.new_size[1] / w, resize.new_size[0] / h])
    np.testing.assert_allclose(resize.apply_coords(prompt.points), prompt.points * scale, rtol=1e-5)
    in_model = session.grid().mask_to_model(interior)
    assert in_model.sum() == pytest.approx(interior.sum() * scale.prod(), rel=0.15)
    assert not in_model[resize.new_size[0] :].any() and not in_model[:, resize.new_size[1] :].any()  # padding
    index, mask = session.predict_entry(book.prompts(axis, s))
    expected = SlicePrompt(boxes=prompt.boxes, points=np.concatenate([point_px, sampled]),
                           point_labels=prompt.point_labels, mask=interior)  # fmt: skip
    whole = predict_volume(model, volume, PredictConfig(slices=session.slice_config), prompts={s: expected})
    np.testing.assert_array_equal(mask, np.moveaxis(whole.array, axis, 0)[s] > 0)
    assert mask.shape == (h, w)


def _entry(entry):
    return {"points": entry.points, "labels": entry.labels, "box": entry.box, "scribbles": entry.scribbles,
            "lasso": entry.lasso}  # fmt: skip


def test_views_of_one_volume_share_the_model_and_keep_their_own_embeddings(scene, rotated, model):
    volume = geometry.volumeToCore(rotated)
    pool = SessionPool()
    loads = []
    sessions = [pool.get("tiny", lambda: loads.append(1) or model, rotated.GetID(), lambda: volume, axis=a)
                for a in (0, 1, 2)]  # fmt: skip
    assert len(loads) == 1 and [x.axis for x in sessions] == [0, 1, 2]
    for x in sessions:
        x.embedding(1)
    assert [x.encoder_calls for x in sessions] == [1, 1, 1]
    assert pool.get("tiny", lambda: model, rotated.GetID(), lambda: volume, axis=1) is sessions[1]
