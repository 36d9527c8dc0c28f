"""SAMTune: fine-tune the Segment Anything Model on your own labelled volumes, in 3D Slicer.

This file is the Slicer layer only: the panel and the console API. ``SAMTuneLib/`` holds the rest of
the Slicer side (``Geometry``, ``Segments``, ``TrainingData``: MRML conversions; ``Jobs``: background
jobs with one poller; ``Dependencies``: first-use installation). Training and prediction run in the
background worker of the pure-Python core package ``samtune`` (``Logic/samtune``). Nothing imported
while the panel opens needs PyTorch, so the panel opens, lists presets, models and cases, and offers
to install PyTorch on the first Train or Segment.
"""

import json
import logging
import os
import sys
from typing import Annotated, Optional

import ctk
import qt
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Maximum, Minimum, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: Folder that holds the core package ``samtune``.
LOGIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Logic")

#: Application setting (Application Settings > SAMTune) overriding the model library folder.
MODELS_FOLDER_SETTING = "SAMTune/ModelsFolder"


def ensureCoreOnPath():
    """Put ``Logic/`` on ``sys.path`` so ``import samtune`` finds the bundled core package."""
    if LOGIC_DIR not in sys.path:
        sys.path.insert(0, LOGIC_DIR)


ensureCoreOnPath()

from SAMTuneLib import Progress  # noqa: E402 - after the core is on sys.path (Slicer puts this folder there)
from SAMTuneLib.LibraryPanel import LibraryPanel  # noqa: E402
from SAMTuneLib.SelfTest import SAMTuneSelfTest  # noqa: E402
from SAMTuneLib.StrategyPanel import StrategyPanel  # noqa: E402
from SAMTuneLib.TrainingDataPanel import TrainingDataPanel  # noqa: E402


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
        slicer.app.connect("startupCompleted()", self.initializeAfterStartup)

    def initializeAfterStartup(self):
        if not slicer.app.commandOptions().noMainWindow:
            self.settingsPanel = SAMTuneSettingsPanel()
            slicer.app.settingsDialog().addPanel("SAMTune", self.settingsPanel)


class SAMTuneSettingsPanel(ctk.ctkSettingsPanel):
    """Application Settings > SAMTune: where the model library lives."""

    def __init__(self, *args, **kwargs):
        ctk.ctkSettingsPanel.__init__(self, *args, **kwargs)
        layout = qt.QFormLayout(self)
        self.modelsFolderEdit = ctk.ctkPathLineEdit()
        self.modelsFolderEdit.filters = ctk.ctkPathLineEdit.Dirs
        self.modelsFolderEdit.toolTip = _("Folder of trained models. Empty: the per-user default.")
        layout.addRow(_("Model library folder:"), self.modelsFolderEdit)
        self.registerProperty(
            MODELS_FOLDER_SETTING, self.modelsFolderEdit, "currentPath", str(qt.SIGNAL("currentPathChanged(QString)"))
        )


@parameterNodeWrapper
class SAMTuneParameterNode:
    """GUI state saved with the scene (combo boxes with dynamic items are kept in plain strings)."""

    caseVolume: Optional[slicer.vtkMRMLScalarVolumeNode]
    caseSegmentation: Optional[slicer.vtkMRMLSegmentationNode]
    predictVolume: Optional[slicer.vtkMRMLScalarVolumeNode]
    outputSegmentation: Optional[slicer.vtkMRMLSegmentationNode]
    validationFraction: Annotated[float, WithinRange(0.0, 0.9)] = 0.2
    modelName: str = ""
    epochs: Annotated[int, WithinRange(1, 10000)] = 20
    batchSize: Annotated[int, WithinRange(1, 256)] = 4
    learningRate: Annotated[float, Minimum(0.0), Maximum(1.0)] = 0.005
    seed: Annotated[int, WithinRange(0, 1000000)] = 0
    preset: str = "cpu_quick"
    backbone: str = "litemedsam"
    device: str = "auto"
    structure: str = ""


class SAMTuneWidget(TrainingDataPanel, StrategyPanel, LibraryPanel, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: training data, strategy, train/cancel/resume, model library."""

    #: Columns of the training-data table.
    COLUMNS = ("volume", "segmentation", "segments", "labelled", "fully", "status")

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.ui = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self.cases = []
        self.job = None
        self.lastResult = None
        self.undo = None
        self._refreshingCases = False

    # -- setup ---------------------------------------------------------------------------------
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SAMTune.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SAMTuneLogic()
        # One training table: the panel's rows, the effect's corrections, the console's.
        self.cases = self.logic.trainingCases

        headers = [_("Volume"), _("Segmentation"), _("Segments"), _("Labelled slices"), _("Fully labelled"),
                   _("Status")]  # fmt: skip
        self.ui.casesTable.setColumnCount(len(headers))
        self.ui.casesTable.setHorizontalHeaderLabels(headers)
        self.ui.casesTable.horizontalHeader().setStretchLastSection(True)
        self.ui.casesTable.itemChanged.connect(self.onCaseItemChanged)

        self.ui.addFromSceneButton.clicked.connect(self.onAddFromScene)
        self.ui.addEditedButton.clicked.connect(self.onAddEdited)
        self.ui.addFromFilesButton.clicked.connect(self.onAddFromFiles)
        self.ui.removeCaseButton.clicked.connect(self.onRemoveCases)
        self.ui.structureComboBox.currentTextChanged.connect(self.onStructureChanged)
        self.ui.presetComboBox.currentIndexChanged.connect(self.onPresetChanged)
        self.ui.backboneComboBox.currentIndexChanged.connect(self.onBackboneChanged)
        self.ui.deviceComboBox.currentIndexChanged.connect(self.onDeviceChanged)
        self.ui.downloadWeightsButton.clicked.connect(self.onDownloadWeights)
        self.ui.useLocalWeightsButton.clicked.connect(self.onUseLocalWeights)
        self.ui.trainButton.clicked.connect(self.onTrain)
        self.ui.cancelButton.clicked.connect(self.onCancel)
        self.ui.resumeButton.clicked.connect(self.onResume)
        self.ui.modelsListWidget.currentTextChanged.connect(self.onModelSelected)
        self.ui.renameModelButton.clicked.connect(self.onRenameModel)
        self.ui.deleteModelButton.clicked.connect(self.onDeleteModel)
        self.ui.exportModelButton.clicked.connect(self.onExportModel)
        self.ui.importModelButton.clicked.connect(self.onImportModel)
        self.ui.exportTrainingSetButton.clicked.connect(self.onExportTrainingSet)
        self.ui.segmentVolumeButton.clicked.connect(self.onSegmentVolume)
        self.ui.undoWriteButton.clicked.connect(self.onUndoWrite)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        slicer.app.connect("aboutToQuit()", self.onAboutToQuit)

        self.populateStaticChoices()
        self.initializeParameterNode()
        self.refreshLibrary()
        self.updateButtons()

    def populateStaticChoices(self):
        """Presets, backbones and the library need no PyTorch; devices are asked of a worker process."""
        self.ui.presetComboBox.clear()
        for preset in self.logic.presets():
            self.ui.presetComboBox.addItem(preset.title, preset.name)
        self.refreshBackbonesAndDevices()

    def refreshBackbonesAndDevices(self):
        current = self.ui.backboneComboBox.currentData
        self.ui.backboneComboBox.clear()
        for name, present in self.logic.backbones():
            label = name if present else _("{name} (weights not on this computer)").format(name=name)
            self.ui.backboneComboBox.addItem(label, name)
        self._selectData(self.ui.backboneComboBox, current or (self._parameterNode.backbone if self._parameterNode
                                                              else "litemedsam"))  # fmt: skip
        self.ui.deviceComboBox.blockSignals(True)  # rebuilding must not reset the saved device to "auto"
        self.ui.deviceComboBox.clear()
        self.ui.deviceComboBox.addItem(_("Automatic"), "auto")
        self.ui.deviceComboBox.blockSignals(False)
        if not self.logic.dependenciesReady():
            self.ui.backboneStatusLabel.text = _(
                "PyTorch and SAM packages are installed the first time you train or segment (you will be asked)."
            )
            return
        self.logic.listDevices(self.onDevicesListed)

    def onDevicesListed(self, devices):
        if self.ui is None:
            return
        self.ui.deviceComboBox.blockSignals(True)
        for device in devices:
            if self.ui.deviceComboBox.findData(device["name"]) < 0:
                self.ui.deviceComboBox.addItem(device["text"], device["name"])
        self.ui.deviceComboBox.blockSignals(False)
        if self._parameterNode:
            self._selectData(self.ui.deviceComboBox, self._parameterNode.device)

    # -- parameter node ------------------------------------------------------------------------
    def cleanup(self):
        if self.logic is not None:
            self.logic.stopAll()
        self.removeObservers()
        slicer.app.disconnect("aboutToQuit()", self.onAboutToQuit)
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNode = None
        self.ui = None  # late callbacks (a device list, a finished job) see the panel is gone

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self._selectData(self.ui.presetComboBox, self._parameterNode.preset)
            self._selectData(self.ui.backboneComboBox, self._parameterNode.backbone)
            self._selectData(self.ui.deviceComboBox, self._parameterNode.device)
            self.onPresetChanged()

    @staticmethod
    def _selectData(combo, value):
        index = combo.findData(value)
        if index >= 0:
            combo.currentIndex = index

    # -- training ------------------------------------------------------------------------------
    def onTrain(self):
        if not self.cases:
            slicer.util.warningDisplay(_("Add at least one volume with its segmentation to the training data."))
            return
        if not self.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay(_("Training could not start."), waitCursor=True):
            job = self.logic.train(
                self.cases,
                preset=self._parameterNode.preset,
                structure=self.ui.structureComboBox.currentText or None,
                modelName=self._parameterNode.modelName or None,
                **self.overrides(),
            )
            self.watchJob(job, _("Training"))

    def onResume(self):
        runDir = self.lastResult.run_dir if self.lastResult is not None and self.lastResult.resumable else None
        if runDir is None:
            runDir = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Run folder to resume"),
                                                         self.logic.runsFolder())  # fmt: skip
        if not runDir:
            return
        if not self.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay(_("The run could not be resumed."), waitCursor=True):
            self.watchJob(self.logic.resume(runDir), _("Resuming"))

    def onCancel(self):
        if self.job is not None:
            self.job.cancel()
            self.ui.progressLabel.text = (
                _("Stopping after the current step; a checkpoint is being written...") if self.job.kind != "predict"
                else _("Stopping; nothing will be written.")
            )  # fmt: skip
            self.updateButtons()

    def watchJob(self, job, what):
        """Show ``job``'s progress in the panel (the logic's runner polls it)."""
        self.job = job
        job.client.on_event = self.onWorkerEvent
        job.client.on_log = self.onWorkerLog
        job.whenDone(self.onJobDone)
        self.ui.logTextEdit.clear()
        self.ui.progressBar.value = 0
        self.ui.progressLabel.text = _("{what}: starting the background process...").format(what=what)
        self.updateButtons()

    def onWorkerEvent(self, event):
        if self.job is None:
            return
        kind = event["event"]
        if kind == "progress":
            self.ui.progressBar.value = int(100 * self.job.client.fraction)
            self.ui.progressLabel.text = Progress.describeProgress(event)
        elif kind == "metrics":
            self.ui.logTextEdit.appendPlainText(Progress.describeMetrics(event))
            curve = os.path.join(self.job.run_dir or "", "training_curve.png")
            if self.job.run_dir and os.path.isfile(curve):
                pixmap = qt.QPixmap(curve)
                self.ui.curveLabel.setPixmap(pixmap.scaledToWidth(max(200, self.ui.curveLabel.width)))
        elif kind in ("log", "checkpoint", "started"):
            self.ui.logTextEdit.appendPlainText(Progress.describeEvent(event))

    def onWorkerLog(self, line):
        self.ui.logTextEdit.appendPlainText(line)

    def onJobDone(self, job):
        if job is not self.job or self.ui is None:
            return
        result = job.result
        self.lastResult = result
        self.job = None
        finished = result.state.value == "finished"
        self.ui.progressLabel.text = result.message if not finished else _("Finished.")
        if finished:
            self.ui.progressBar.value = 100
            self.refreshLibrary()
            model = (result.event or {}).get("model")
            if model:
                items = self.ui.modelsListWidget.findItems(os.path.basename(model), qt.Qt.MatchExactly)
                if items:
                    self.ui.modelsListWidget.setCurrentItem(items[0])
            if job.kind == "predict":
                if job.error:
                    slicer.util.errorDisplay(job.error)
                elif job.segmentationNode is not None:
                    self.undo = job.undo
                    self.ui.outputSegmentationSelector.setCurrentNode(job.segmentationNode)
        elif result.state.value == "failed":
            slicer.util.errorDisplay(_("The background job failed:\n\n{message}").format(message=result.message))
        self.updateButtons()

    def onSceneStartClose(self, caller, event):
        self.logic.stopAll()  # running jobs stop (training keeps a checkpoint); pending writes are dropped
        self.job, self.lastResult, self.undo = None, None, None
        self.cases.clear()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()
        self.refreshCases()

    def onAboutToQuit(self):
        self.logic.stopAll()

    # -- state ---------------------------------------------------------------------------------
    def updateButtons(self):
        running = self.job is not None and not self.job.state.done
        hasModel = self.selectedModel() is not None
        self.ui.trainButton.enabled = bool(self.cases) and not running
        self.ui.cancelButton.enabled = running and self.job.state.value == "running"
        self.ui.resumeButton.enabled = not running
        self.ui.removeCaseButton.enabled = bool(self.cases) and not running
        self.ui.exportTrainingSetButton.enabled = bool(self.cases)
        for button in (self.ui.renameModelButton, self.ui.deleteModelButton, self.ui.exportModelButton):
            button.enabled = hasModel and not running
        self.ui.segmentVolumeButton.enabled = hasModel and not running
        self.ui.undoWriteButton.enabled = self.undo is not None and self.undo.canUndo


class SAMTuneLogic(ScriptedLoadableModuleLogic):
    """Computation entry points, usable from the Python console without the widget.

    Never shows dialogs; raises exceptions with user-readable messages instead. Training and
    prediction run in the background worker (``python -m samtune.worker``) with Slicer's Python;
    one :class:`SAMTuneLib.Jobs.JobRunner` (one timer) polls every job of the panel, the effect
    and the console.

    Example (Python console)::

        logic = slicer.util.getModuleLogic("SAMTune")
        cases = [(getNode("heart1"), getNode("heart1-seg"), ["left atrium"])]
        result = logic.train(cases, preset="cpu_quick", modelName="LA", epochs=30, wait=True)
        seg = logic.predict(getNode("heart2"), "LA", wait=True)
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        ensureCoreOnPath()
        #: The training table (``CaseNodes``): the panel's rows and the effect's corrections.
        self.trainingCases = []
        self.lastUndo = None
        self._runner = None
        self._timer = None

    def getParameterNode(self):
        return SAMTuneParameterNode(super().getParameterNode())

    def coreVersion(self):
        """Version of the bundled core package (importing it needs no torch)."""
        import samtune

        return samtune.__version__

    # -- folders, presets, backbones, devices ---------------------------------------------------
    def library(self):
        from samtune.library import ModelLibrary

        folder = slicer.util.settingsValue(MODELS_FOLDER_SETTING, "") or None
        return ModelLibrary(folder)

    def runsFolder(self):
        """Per-user folder of training runs (beside the model library)."""
        folder = os.path.join(os.path.dirname(str(self.library().root)), "runs")
        os.makedirs(folder, exist_ok=True)
        return folder

    def presets(self):
        from samtune.train.presets import list_presets

        return list_presets()

    def preset(self, name):
        from samtune.train.presets import load_preset

        return load_preset(name)

    def dependenciesReady(self):
        from SAMTuneLib import Dependencies

        return not Dependencies.missingRequirements()

    def backbones(self):
        """``[(name, weights present)]`` for the backbone picker (no torch, no hashing)."""
        from samtune.models.registry import list_backbones
        from samtune.models.weights import weights_status

        return [(spec.name, weights_status(spec)[0]) for spec in list_backbones()]

    def backboneStatus(self, name):
        from samtune.models.registry import get_backbone
        from samtune.models.weights import weights_status

        present, path, _verified = weights_status(get_backbone(name))
        return _("Weights present: {path}").format(path=path) if present else _("Weights not on this computer.")

    def backboneUrl(self, name):
        from samtune.models.registry import get_backbone

        return get_backbone(name).url

    def downloadWeights(self, name, progress=None):
        from samtune.models import download_weights, get_backbone

        return download_weights(get_backbone(name), progress=progress)

    def useLocalWeights(self, name, path):
        """Copy a local weights file into the cache after checking its SHA-256 against the published one."""
        import pathlib

        from samtune.models import download_weights, get_backbone

        return download_weights(get_backbone(name), url=pathlib.Path(path).resolve().as_uri())

    def listDevices(self, callback):
        """Ask a worker process for CUDA devices (with free memory), MPS and the CPU; ``callback([{name, text}])``.

        The worker creates the CUDA context, not Slicer's process (a context holds GPU memory until
        Slicer quits). The callback is not called when the worker fails; the picker keeps "Automatic".
        """

        def done(job):
            if job.result.state.value == "finished":
                callback([self._deviceEntry(d) for d in (job.result.event or {}).get("devices", [])])

        self.runner.listDevices().whenDone(done)

    @staticmethod
    def _deviceEntry(device):
        text = device["label"]
        if device.get("free_bytes") is not None:
            text = _("{label} ({free:.1f} of {total:.1f} GB free)").format(
                label=device["label"], free=device["free_bytes"] / 1e9, total=device["total_bytes"] / 1e9
            )
        return {"name": device["name"], "text": f"{device['name']}: {text}"}

    # -- jobs ----------------------------------------------------------------------------------
    @property
    def runner(self):
        """The one job runner (and poll timer) of this logic."""
        if self._runner is None:
            from SAMTuneLib.Jobs import JobRunner

            env = {"PYTHONPATH": os.pathsep.join(p for p in (LOGIC_DIR, os.environ.get("PYTHONPATH", "")) if p)}

            def launch(arguments, environment):
                return slicer.util.launchConsoleProcess(list(arguments), updateEnvironment=environment)

            self._timer = qt.QTimer()
            self._timer.setInterval(200)
            self._runner = JobRunner(launcher=launch, env=env, timer=self._timer)
            self._timer.timeout.connect(self._runner.poll)
        return self._runner

    def _wait(self, job):
        return self.runner.wait(job, processEvents=slicer.app.processEvents)

    def stopAll(self):
        """Stop every running job (scene close, quit): checkpoints kept, pending writes dropped. Never raises."""
        if self._runner is not None:
            self._runner.stopAll()
        self.lastUndo = None

    def train(self, cases, preset="cpu_quick", structure=None, modelName=None, wait=False, callback=None,
              tiny=False, **overrides):  # fmt: skip
        """Fine-tune on ``cases`` in the background worker.

        Args:
            cases: ``CaseNodes`` or ``(volumeNode, segmentationNode, [segment names], fullyLabelled)`` tuples.
            preset: Preset name (``samtune presets``).
            structure: Segment name to learn when the cases hold several.
            modelName: Name in the model library (default: structure + date).
            wait: Block (processing Slicer events) until done and return the ``JobResult``.
            callback: Called with the ``JobResult`` when the job ends.
            tiny: Dry run with a tiny random model (seconds; for tests).
            overrides: Preset fields, e.g. ``epochs=30``, ``device="cuda:0"``.

        Returns:
            The ``JobResult`` (``wait=True``) or the running job (``.cancel()``, ``.run_dir``, ``.result``).
        """
        import datetime

        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        modelPath = self.library().new_model_path(modelName or f"{structure or 'model'} {stamp}")
        job = self.runner.train(cases, runsFolder=self.runsFolder(), modelDir=str(modelPath), preset=preset,
                                structure=structure, name=modelName or structure or "model", tiny=tiny,
                                overrides=overrides)  # fmt: skip
        return self._finish(job, wait, callback)

    def addCorrections(self, volumeNode, segmentationNode, segmentId, slices, axis=None):
        """Add slices the user corrected or accepted to the training table as ground truth, slice by slice.

        A slice among them without the structure counts as "structure absent". Corrections of the same
        segment of the same volume are merged into one row.

        Args:
            slices: Slice indices along ``axis``.
            axis: numpy axis of the slices (default: the axis training slices the volume along).

        Returns:
            The training-table row (``CaseNodes``).

        Raises:
            ValueError: Slices outside the volume, or along another axis than training's.
        """
        from SAMTuneLib.Geometry import gridOf
        from SAMTuneLib.TrainingData import CaseNodes, correctionSlices

        from samtune.data.slicing import resolve_axis

        axis = resolve_axis(gridOf(volumeNode), "auto") if axis is None else int(axis)
        chosen = correctionSlices(volumeNode, slices, axis)
        for case in self.trainingCases:
            if (case.slices is not None and case.volumeNode is volumeNode and case.segmentationNode is segmentationNode
                    and case.segmentIds == [segmentId]):  # fmt: skip
                case.slices = sorted(set(case.slices) | set(chosen))
                return case
        case = CaseNodes(volumeNode, segmentationNode, [segmentId], caseId=f"{volumeNode.GetName()}-corrections",
                         slices=chosen, axis=axis)  # fmt: skip
        self.trainingCases.append(case)
        return case

    def retrain(self, model, modelName=None, wait=False, callback=None, tiny=False, **overrides):
        """Retrain a model on the whole training table (old cases and corrections), from its own weights.

        The new model keeps the model's backbone, method and settings (``overrides`` on top) and its card
        links the model it came from.

        Args:
            model: A model of the library (name) or a model folder.
            modelName: Name of the new model (default: the model's name + " retrained" + date).

        Returns:
            The ``JobResult`` (``wait=True``) or the running job.
        """
        import datetime

        folder, structure = self.resolveModel(model)
        if not os.path.isdir(folder):
            raise ValueError(
                _("Only a fine-tuned model can be retrained; '{model}' is a base backbone.").format(model=model)
            )
        if not self.trainingCases:
            raise ValueError(
                _("The training table is empty: add the corrected slices first (SAM auto: Add to training data).")
            )
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = modelName or f"{os.path.basename(folder)} retrained {stamp}"
        modelPath = self.library().new_model_path(name)
        job = self.runner.train(self.trainingCases, runsFolder=self.runsFolder(), modelDir=str(modelPath),
                                preset=None, structure=structure, name=name, tiny=tiny, overrides=overrides,
                                parent=folder)  # fmt: skip
        return self._finish(job, wait, callback)

    def resume(self, runDir, wait=False, callback=None):
        """Continue a cancelled or crashed training run from its last checkpoint."""
        return self._finish(self.runner.resume(runDir), wait, callback)

    def _finish(self, job, wait, callback):
        if callback is not None:
            job.whenDone(lambda done: callback(done.result))
        return self._wait(job) if wait else job

    def resolveModel(self, model):
        """``(model folder or backbone name, structure)`` for a library name, a model folder or a backbone."""
        from samtune.library.card import read_model_card

        if os.path.isdir(model):
            return model, str(read_model_card(model).get("structure", "SAMTune"))
        names = {entry.name: entry for entry in self.library().models()}
        if model in names:
            return str(names[model].path), names[model].structures[0]
        return model, "SAMTune"  # a backbone name (zero-shot); the worker names an unknown one

    def predict(self, volumeNode, model, segmentationNode=None, wait=True, callback=None, mode="replace",
                threshold=0.5, device="auto", sliceSearch=0, axis="auto", sliceRange=None, refine=None,
                recordUndo=True):  # fmt: skip
        """Segment the volume (or ``sliceRange``) automatically with a library model, a model folder or a backbone.

        The result goes into ``segmentationNode`` (a new one when ``None``), in a segment named
        after the model's structure, when *this* prediction finishes; a cancelled or failed one
        writes nothing. Writes into an existing segmentation can be undone (``logic.lastUndo.undo()``).
        ``sliceSearch=N`` (N >= 2) segments every N-th slice first and then only the slices around
        the structure. ``sliceRange=(first, last)`` (inclusive, along ``axis``) limits the slices.
        ``refine`` sets the refinement passes of automatic mode (``None``: the model's own; 0: off).
        ``recordUndo=False`` leaves ``lastUndo`` alone (the effect's previews are not user writes).

        Returns:
            The segmentation node (``wait=True``), or the running ``PredictionJob``: its result is
            written when it finishes (``job.segmentationNode``), then ``callback(job)`` is called.

        Raises:
            RuntimeError: ``wait=True`` and the prediction failed, was cancelled or could not be written.
        """
        modelPath, structure = self.resolveModel(model)
        job = self.runner.predict(volumeNode, modelPath, structure=structure, segmentationNode=segmentationNode,
                                  mode=mode, threshold=threshold, device=device, sliceSearch=sliceSearch, axis=axis,
                                  sliceRange=sliceRange, refine=refine)  # fmt: skip

        def written(done):
            if recordUndo and done.undo is not None:
                self.lastUndo = done.undo

        job.whenDone(written)
        if callback is not None:
            job.whenDone(callback)
        if not wait:
            return job
        result = self._wait(job)
        if result.state.value != "finished" or job.error:
            raise RuntimeError(job.error or result.message)
        return job.segmentationNode


class SAMTuneTest(SAMTuneSelfTest):
    """Self-test run inside Slicer: ``slicer.selfTests['SAMTune']()`` (see ``SAMTuneLib/SelfTest.py``)."""
