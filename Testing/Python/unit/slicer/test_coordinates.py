"""Clicks in world RAS -> the volume's IJK -> the model's input space and back, on real MRML nodes:
rotated, anisotropic and transformed volumes; prompts given in RAS segment exactly like IJK prompts."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import vtk
from SAMTuneLib import Geometry as geometry
from test_mrml_bridge import add_volume, ijk_to_ras, rotation

from samtune.data import make_phantom
from samtune.models import build_tiny_model
from samtune.predict import PredictConfig, SlicePrompt, predict_volume
from samtune.predict.session import PredictorSession


@pytest.fixture
def rotated(scene):
    image, _ = make_phantom(shape=(6, 40, 48), seed=2)
    matrix = ijk_to_ras((0.6, 0.9, 3.0), (-40.0, 12.0, 7.0), rotation(25, 2) @ rotation(40, 1))
    return add_volume(scene, image.array.astype(np.int16), matrix), matrix


def test_ras_to_ijk_inverts_mrmls_own_matrix(rotated):
    node, matrix = rotated
    ijk = np.array([[0, 0, 0], [47, 39, 5], [12.5, 7.25, 2.0]])
    mrml_matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(mrml_matrix)  # MRML's own mapping, not ours
    ras = np.array([mrml_matrix.MultiplyPoint([*p, 1.0])[:3] for p in ijk])
    np.testing.assert_allclose(ras, (matrix @ np.c_[ijk, np.ones(3)].T).T[:, :3], atol=1e-9)
    np.testing.assert_allclose(geometry.rasToIjk(node, ras), ijk, atol=1e-9)
    np.testing.assert_allclose(geometry.ijkToRas(node, ijk[1]), ras[1], atol=1e-9)


def test_parent_transform_is_applied(scene, rotated):
    node, _ = rotated
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    moved = np.eye(4)
    moved[:3, :3] = rotation(10, 0)
    moved[:3, 3] = (5.0, -3.0, 8.0)
    transform.SetMatrixTransformToParent(geometry.numpyToMatrix(moved))
    before = geometry.ijkToRas(node, [10, 20, 3])
    node.SetAndObserveTransformNodeID(transform.GetID())
    after = geometry.ijkToRas(node, [10, 20, 3])
    np.testing.assert_allclose(after, (moved @ [*before, 1])[:3], atol=1e-9)
    np.testing.assert_allclose(geometry.rasToIjk(node, after), [10, 20, 3], atol=1e-9)


def test_model_space_round_trip_is_exact_for_anisotropic_slices(rotated):
    node, _ = rotated
    session = PredictorSession(build_tiny_model("litemedsam", seed=0), geometry.volumeToCore(node))
    resize = session.grid().resize
    pixels = np.array([[0.0, 0.0], [47.0, 39.0], [12.5, 30.25]])
    model_space = resize.apply_coords(pixels)
    assert model_space.max() <= session.model.input_size
    np.testing.assert_allclose(resize.restore_coords(model_space), pixels, atol=1e-6)


def test_prompts_clicked_in_ras_equal_prompts_in_ijk(rotated):
    node, _ = rotated
    model = build_tiny_model("litemedsam", seed=0).eval()
    volume = geometry.volumeToCore(node)
    session = PredictorSession(model, volume)
    clicks_ijk = np.array([[20.0, 18.0, 3.0], [4.0, 30.0, 3.0]])
    clicks_ras = geometry.ijkToRas(node, clicks_ijk)  # where a user clicks in a slice view
    index, mask = session.predict_ijk(geometry.rasToIjk(node, clicks_ras), [1, 0])
    assert index == 3
    prompt = SlicePrompt(points=clicks_ijk[:, :2], point_labels=[1, 0])  # k slices: (x, y) = (i, j)
    expected = predict_volume(model, volume, PredictConfig(slices=session.slice_config), prompts={3: prompt})
    np.testing.assert_array_equal(mask, expected.array[3] > 0)
    assert slicer.vtkMRMLScene is not None
