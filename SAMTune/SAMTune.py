"""SAMTune: fine-tune the Segment Anything Model on your own labelled volumes, in 3D Slicer.

This file is the Slicer layer only: it converts MRML nodes to arrays and back, runs the
background worker and shows state. All model, training and prediction code lives in the
pure-Python core package ``samtune`` (``Logic/samtune``), imported lazily once its
dependencies (torch through the PyTorch extension) are installed.
"""

import logging
import os
import sys

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: Folder that holds the core package ``samtune``.
LOGIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Logic")


def ensureCoreOnPath():
    """Put ``Logic/`` on ``sys.path`` so ``import samtune`` finds the bundled core package."""
    if LOGIC_DIR not in sys.path:
        sys.path.insert(0, LOGIC_DIR)


class SAMTune(ScriptedLoadableModule):
    """Module description shown in Slicer's module list."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SAMTune")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["SAMTune developers"]
        self.parent.helpText = _(
            "Fine-tune the Segment Anything Model (SAM) on a few of your own labelled volumes, "
            "then segment new volumes automatically or with a few clicks. "
            "Training runs in a background process; Slicer stays responsive."
        )
        self.parent.acknowledgementText = _(
            "Methods: BLO-SAM, Conv-LoRA and the finetune-SAM study. Default backbone: LiteMedSAM "
            "(Ma et al.). Built on Segment Anything (Kirillov et al.)."
        )


class SAMTuneWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Module panel. The training and model-library panel is built in a later version."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = SAMTuneLogic()
        import qt

        label = qt.QLabel(
            _("SAMTune core version {version}. Use the samtune command line for prediction.").format(
                version=self.logic.coreVersion()
            )
        )
        label.wordWrap = True
        self.layout.addWidget(label)
        self.layout.addStretch(1)

    def cleanup(self):
        self.removeObservers()


class SAMTuneLogic(ScriptedLoadableModuleLogic):
    """Computation entry points, usable from the Python console without the widget.

    Never shows dialogs; raises exceptions with user-readable messages instead.
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        ensureCoreOnPath()

    def coreVersion(self):
        """Version of the bundled core package (importing it needs no torch)."""
        import samtune

        return samtune.__version__


class SAMTuneTest(ScriptedLoadableModuleTest):
    """Self-test run inside Slicer: ``slicer.selfTests['SAMTune']()``."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_CoreImports()

    def test_CoreImports(self):
        self.delayDisplay(_("Checking that the SAMTune core package is importable"))
        logic = SAMTuneLogic()
        version = logic.coreVersion()
        self.assertTrue(version)
        logging.info("SAMTune core %s", version)
        self.delayDisplay(_("Test passed"))
