"""The module's self-test, run inside Slicer (``slicer.selfTests["SAMTune"]()``).

``SAMTune.py`` names it ``SAMTuneTest`` (the class Slicer looks for).
"""

import os

import slicer
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

#: The folder of the core package ``samtune`` (beside this folder).
LOGIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Logic")


def SAMTuneLogic():
    from SAMTune import SAMTuneLogic as logicClass

    return logicClass()


class SAMTuneSelfTest(ScriptedLoadableModuleTest):
    """Self-test run inside Slicer: ``slicer.selfTests['SAMTune']()``. Tiny models (seconds to a minute).

    Covers, inside real Slicer, what the CI tests (slicer-core MRML, PySide6, a launcher-like parent)
    cannot: the set-up imports under ``PythonSlicer`` with torch blocked, cancelling a running
    prediction through the real AppLauncher, and Apply through the real Segment Editor on a
    segmentation with another geometry under a transform.
    """

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        for test in (self.test_SetupWithoutTorch, self.test_BridgeRoundTrip, self.test_TinyTrainingAndPrediction,
                     self.test_CancelPrediction, self.test_ApplyOnOtherGeometry):  # fmt: skip
            self.setUp()
            test()

    def test_SetupWithoutTorch(self):
        self.delayDisplay(_("Panel set-up modules import under PythonSlicer with torch blocked"))
        from samtune.worker.client import python_for_worker
        from SAMTuneLib.Dependencies import SETUP_MODULES

        code = (
            "import importlib, importlib.abc, sys\n"
            "class B(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'torchvision', 'SimpleITK'):\n"
            "            raise ImportError('blocked ' + name)\n"
            "sys.meta_path.insert(0, B())\n"
            f"sys.path[:0] = [{LOGIC_DIR!r}, {os.path.dirname(LOGIC_DIR)!r}]\n"
            f"for m in {list(SETUP_MODULES)!r}: importlib.import_module(m)\n"
            "from samtune.train.presets import list_presets; print(len(list_presets()))\n"
        )
        process = slicer.util.launchConsoleProcess([python_for_worker(), "-c", code])
        output = process.communicate()[0]
        self.assertEqual(process.returncode, 0, output)
        self.assertGreater(int(output.strip().splitlines()[-1]), 0)
        widget = slicer.util.getModuleWidget("SAMTune")
        self.assertGreater(widget.ui.presetComboBox.count, 0)

    def _phantomNodes(self, shape=(12, 64, 64)):
        import numpy as np

        from samtune.data import make_phantom
        from SAMTuneLib.Segments import writeMaskToSegment

        image, label = make_phantom(shape=shape, seed=0)
        volumeNode = slicer.util.addVolumeFromArray(image.array.astype(np.float32), name="phantom")
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "phantom-seg")
        segmentationNode.CreateDefaultDisplayNodes()
        writeMaskToSegment(label.array == 1, segmentationNode, volumeNode, name="structure")
        return volumeNode, segmentationNode, label

    def test_BridgeRoundTrip(self):
        self.delayDisplay(_("MRML bridge round trip"))
        import numpy as np

        from SAMTuneLib.Segments import labelsFromSegments, segmentIdsByName

        volumeNode, segmentationNode, phantomLabel = self._phantomNodes()
        label, structures = labelsFromSegments(segmentationNode, list(segmentIdsByName(segmentationNode).values()),
                                               volumeNode)  # fmt: skip
        self.assertEqual(structures, {"structure": 1})
        self.assertTrue(np.array_equal(label.array == 1, phantomLabel.array == 1))

    def _tinyModel(self):
        volumeNode, segmentationNode, _phantom = self._phantomNodes()
        result = SAMTuneLogic().train([(volumeNode, segmentationNode, ["structure"], True)], preset="cpu_quick",
                                      modelName=f"selftest {os.getpid()}", wait=True, tiny=True, epochs=2,
                                      batch_size=2, backbone="sam_vit_b", device="cpu")  # fmt: skip
        self.assertEqual(result.state.value, "finished", result.message)
        return result.event["model"]

    def test_TinyTrainingAndPrediction(self):
        self.delayDisplay(_("Training a tiny model in the background worker"))
        logic = SAMTuneLogic()
        model = self._tinyModel()
        volumeNode = slicer.util.getNode("phantom")
        segmentation = logic.predict(volumeNode, model, wait=True)
        self.assertIsNotNone(segmentation)
        logic.library().delete(os.path.basename(model))
        self.delayDisplay(_("Test passed"))

    def test_CancelPrediction(self):
        self.delayDisplay(_("Cancelling a running prediction stops the worker behind PythonSlicer"))
        import psutil

        logic = SAMTuneLogic()
        model = self._tinyModel()
        longVolume, _segmentation, _label = self._phantomNodes(shape=(1200, 32, 32))
        target = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "target")
        job = logic.predict(longVolume, model, target, wait=False)
        while not any(e["event"] == "progress" for e in job.client.events):
            self.assertFalse(job.state.done, job.result and job.result.message)
            logic.runner.poll()
            slicer.app.processEvents()
        tree = list(job.client._tree)
        job.cancel()
        result = logic.runner.wait(job, timeout=60, processEvents=slicer.app.processEvents)
        self.assertEqual(result.state.value, "cancelled", result.message)
        self.assertTrue(all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in tree))
        self.assertEqual(target.GetSegmentation().GetNumberOfSegments(), 0)
        logic.library().delete(os.path.basename(model))

    def test_ApplyOnOtherGeometry(self):
        self.delayDisplay(_("Apply writes the preview into a segmentation on another grid under a transform"))
        import numpy as np
        import vtk

        from SAMTuneLib.Segments import segmentMask

        volumeNode, _segmentation, label = self._phantomNodes()
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "fine")
        halfMillimetre = np.diag([0.5, 0.5, 0.5, 1.0])  # addVolumeFromArray wants an array or a vtkMatrix4x4
        fine = slicer.util.addVolumeFromArray(np.zeros((24, 128, 128), np.uint8), ijkToRAS=halfMillimetre, name="fine")
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(fine)
        transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
        matrix = vtk.vtkMatrix4x4()
        matrix.SetElement(1, 3, 3.0)
        transform.SetMatrixTransformToParent(matrix)
        segmentationNode.SetAndObserveTransformNodeID(transform.GetID())
        segmentId = segmentationNode.GetSegmentation().AddEmptySegment("", "target")
        editor = slicer.qMRMLSegmentEditorWidget()
        editor.setMRMLScene(slicer.mrmlScene)
        editor.setMRMLSegmentEditorNode(slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode"))
        editor.setSegmentationNode(segmentationNode)
        editor.setSourceVolumeNode(volumeNode)
        editor.setCurrentSegmentID(segmentId)
        editor.setActiveEffectByName("SAM auto")
        effect = editor.activeEffect().self()
        mask = label.array == 1
        effect.previewMask = mask
        effect.ui.writeModeComboBox.currentIndex = effect.ui.writeModeComboBox.findData("replace")
        effect.onApply()
        self.assertTrue(np.array_equal(segmentMask(segmentationNode, segmentId, volumeNode), mask))
        editor.setActiveEffect(None)
        self.delayDisplay(_("Test passed"))
