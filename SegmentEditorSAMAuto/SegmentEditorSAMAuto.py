"""Hidden module that registers the "SAM auto" Segment Editor effect when Slicer has started."""

import os

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest


class SegmentEditorSAMAuto(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SAM auto effect")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations", "SAMTune"]
        self.parent.contributors = ["SAMTune developers"]
        self.parent.hidden = True
        self.parent.helpText = _("Registers the SAM auto effect of SAMTune in the Segment Editor.")
        self.parent.acknowledgementText = _("Part of the SAMTune extension.")
        slicer.app.connect("startupCompleted()", self.registerEditorEffect)

    def registerEditorEffect(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as qSlicerSegmentationsEditorEffects

        instance = qSlicerSegmentationsEditorEffects.qSlicerSegmentEditorScriptedEffect(None)
        effectFilename = os.path.join(os.path.dirname(__file__), "SegmentEditorSAMAutoLib", "SegmentEditorEffect.py")
        instance.setPythonSource(effectFilename.replace("\\", "/"))
        instance.self().register()


class SegmentEditorSAMAutoTest(ScriptedLoadableModuleTest):
    def runTest(self):
        slicer.mrmlScene.Clear(0)
        self.delayDisplay(_("Checking that the SAM auto effect is registered"))
        editor = slicer.qMRMLSegmentEditorWidget()
        editor.setMRMLScene(slicer.mrmlScene)
        editor.setMRMLSegmentEditorNode(slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode"))
        self.assertIsNotNone(editor.effectByName("SAM auto"))
        self.delayDisplay(_("Test passed"))
