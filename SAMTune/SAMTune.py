"""SAMTune: fine-tune the Segment Anything Model on your own labelled volumes, in 3D Slicer.

This file is the Slicer layer only: it shows state and forwards actions. MRML conversions live in
``SAMTuneLib/MRMLBridge.py``, package installation in ``SAMTuneLib/Dependencies.py``; training and
prediction run in the background worker of the pure-Python core package ``samtune``
(``Logic/samtune``), which is imported lazily once its dependencies are installed.
"""

import json
import logging
import os
import sys
import tempfile
from typing import Annotated, Optional

import ctk
import qt
import slicer
import vtk
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


class SAMTuneWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
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
        self.client = None
        self.lastResult = None
        self.undo = None
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.timeout.connect(self.onPollWorker)

    # -- setup ---------------------------------------------------------------------------------
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SAMTune.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SAMTuneLogic()

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
        """Presets come from Resources/presets (no torch needed); backbones and devices need torch."""
        self.ui.presetComboBox.clear()
        for preset in self.logic.presets():
            self.ui.presetComboBox.addItem(preset.title, preset.name)
        self.refreshBackbonesAndDevices()

    def refreshBackbonesAndDevices(self):
        self.ui.backboneComboBox.clear()
        self.ui.deviceComboBox.clear()
        if not self.logic.dependenciesReady():
            self.ui.backboneStatusLabel.text = _(
                "PyTorch and SAM packages are installed the first time you train or segment (you will be asked)."
            )
            self.ui.backboneComboBox.addItem("litemedsam", "litemedsam")
            self.ui.deviceComboBox.addItem(_("Automatic"), "auto")
            return
        for name, present in self.logic.backbones():
            label = name if present else _("{name} (weights not downloaded)").format(name=name)
            self.ui.backboneComboBox.addItem(label, name)
        self.ui.deviceComboBox.addItem(_("Automatic"), "auto")
        for device in self.logic.devices():
            self.ui.deviceComboBox.addItem(device["text"], device["name"])

    # -- parameter node ------------------------------------------------------------------------
    def cleanup(self):
        self.timer.stop()
        self.stopJob(wait_s=5.0)
        self.removeObservers()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)

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

    # -- training data -------------------------------------------------------------------------
    def addCase(self, volumeNode, segmentationNode, segmentIds=None):
        from SAMTuneLib.MRMLBridge import CaseNodes, segmentIdsByName

        if volumeNode is None or segmentationNode is None:
            slicer.util.warningDisplay(_("Choose a volume and a segmentation first."))
            return
        ids = segmentIds or list(segmentIdsByName(segmentationNode).values())
        self.cases.append(CaseNodes(volumeNode, segmentationNode, ids))
        self.refreshCases()

    def onAddFromScene(self):
        self.addCase(self.ui.caseVolumeSelector.currentNode(), self.ui.caseSegmentationSelector.currentNode())

    def onAddEdited(self):
        editorWidget = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        segmentation = editorWidget.segmentationNode()
        source = editorWidget.sourceVolumeNode() if hasattr(editorWidget, "sourceVolumeNode") else None
        if segmentation is None or source is None:
            slicer.util.warningDisplay(_("Open a segmentation with its source volume in the Segment Editor first."))
            return
        self.addCase(source, segmentation)

    def onAddFromFiles(self):
        from samtune.train.manifest import label_file_for

        paths = qt.QFileDialog.getOpenFileNames(
            slicer.util.mainWindow(), _("Images to add (their labels lie beside them)"), "",
            _("Images (*.nii *.nii.gz *.nrrd *.mha *.mhd *.png *.jpg)"),
        )  # fmt: skip
        missing = []
        for path in paths:
            label = label_file_for(path)
            if label is None:
                missing.append(os.path.basename(path))
                continue
            volume = slicer.util.loadVolume(path)
            segmentation = slicer.util.loadSegmentation(str(label))
            self.addCase(volume, segmentation)
        if missing:
            slicer.util.warningDisplay(
                _("No label file found beside: {names}. Name labels like 'heart_label.nii.gz' or "
                  "'heart.seg.nrrd' next to 'heart.nii.gz'.").format(names=", ".join(missing))
            )  # fmt: skip

    def onRemoveCases(self):
        rows = sorted({index.row() for index in self.ui.casesTable.selectedIndexes()}, reverse=True)
        for row in rows:
            del self.cases[row]
        self.refreshCases()

    def onCaseItemChanged(self, item):
        if item.column() == self.COLUMNS.index("fully") and item.row() < len(self.cases):
            fully = item.checkState() == qt.Qt.Checked
            if self.cases[item.row()].fullyLabelled != fully:
                self.cases[item.row()].fullyLabelled = fully
                self.refreshCases()

    def refreshCases(self):
        from SAMTuneLib.MRMLBridge import describeCase

        table = self.ui.casesTable
        table.blockSignals(True)
        table.setRowCount(len(self.cases))
        names = []
        problems = 0
        for row, case in enumerate(self.cases):
            status = describeCase(case.volumeNode, case.segmentationNode, case.segmentIds,
                                  fullyLabelled=case.fullyLabelled)  # fmt: skip
            segmentNames = list(status.foregroundVoxels) or case.segmentIds
            names.extend(n for n in segmentNames if n not in names)
            problems += 0 if status.ok else 1
            values = [
                case.volumeNode.GetName(), case.segmentationNode.GetName(), ", ".join(segmentNames),
                f"{status.labelledSlices} / {status.totalSlices}", "",
                _("OK") if status.ok else " ".join(status.problems),
            ]  # fmt: skip
            for column, value in enumerate(values):
                item = qt.QTableWidgetItem(value)
                flags = qt.Qt.ItemIsSelectable | qt.Qt.ItemIsEnabled
                if column == self.COLUMNS.index("fully"):
                    flags |= qt.Qt.ItemIsUserCheckable
                    item.setCheckState(qt.Qt.Checked if case.fullyLabelled else qt.Qt.Unchecked)
                item.setFlags(flags)
                if column == self.COLUMNS.index("status") and not status.ok:
                    item.setForeground(qt.QBrush(qt.QColor("red")))
                item.setToolTip(value)
                table.setItem(row, column, item)
        table.blockSignals(False)
        current = self.ui.structureComboBox.currentText
        self.ui.structureComboBox.clear()
        self.ui.structureComboBox.addItems(names)
        if current in names:
            self.ui.structureComboBox.setCurrentText(current)
        self.ui.casesSummaryLabel.text = (
            _("No training data yet.") if not self.cases
            else _("{n} case(s); {bad} with problems (see Status).").format(n=len(self.cases), bad=problems)
        )  # fmt: skip
        self.updateButtons()

    def onStructureChanged(self, text):
        if self._parameterNode:
            self._parameterNode.structure = text

    # -- strategy ------------------------------------------------------------------------------
    def onPresetChanged(self, *_args):
        name = self.ui.presetComboBox.currentData
        if not name:
            return
        preset = self.logic.preset(name)
        self.ui.presetDescriptionLabel.text = f"{preset.description}\n" + _("When to use: {when}").format(
            when=preset.when_to_use
        )
        self.ui.presetFieldsTextEdit.setPlainText(json.dumps(preset.config, indent=2))
        if self._parameterNode and self._parameterNode.preset != name:
            self._parameterNode.preset = name
            config = preset.config
            self._parameterNode.epochs = int(config.get("epochs", self._parameterNode.epochs))
            self._parameterNode.batchSize = int(config.get("batch_size", self._parameterNode.batchSize))
            self._parameterNode.learningRate = float(config.get("lr", self._parameterNode.learningRate))
            self._selectData(self.ui.backboneComboBox, config.get("backbone", "litemedsam"))

    def onBackboneChanged(self, *_args):
        name = self.ui.backboneComboBox.currentData
        if not name:
            return
        if self._parameterNode:
            self._parameterNode.backbone = name
        if self.logic.dependenciesReady():
            self.ui.backboneStatusLabel.text = self.logic.backboneStatus(name)

    def onDeviceChanged(self, *_args):
        if self._parameterNode and self.ui.deviceComboBox.currentData:
            self._parameterNode.device = self.ui.deviceComboBox.currentData

    def onDownloadWeights(self):
        if not self.ensureDependencies():
            return
        name = self.ui.backboneComboBox.currentData
        url = self.logic.backboneUrl(name)
        if not url:
            slicer.util.infoDisplay(_("'{name}' ships with SAMTune or has no public download.").format(name=name))
            return
        if not slicer.util.confirmOkCancelDisplay(
            _("Download the weights of '{name}' from\n{url}\n\nThe file is checked against its published SHA-256 "
              "and stored in your per-user cache. Nothing else is sent.").format(name=name, url=url)
        ):  # fmt: skip
            return
        with slicer.util.tryWithErrorDisplay(_("Download failed."), waitCursor=True):
            self.logic.downloadWeights(name, progress=lambda done, total: slicer.app.processEvents())
        self.refreshBackbonesAndDevices()
        self._selectData(self.ui.backboneComboBox, name)

    def onUseLocalWeights(self):
        if not self.ensureDependencies():
            return
        name = self.ui.backboneComboBox.currentData
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), _("Weights file for {name}").format(name=name))
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("This file cannot be used."), waitCursor=True):
            self.logic.useLocalWeights(name, path)
        self.refreshBackbonesAndDevices()
        self._selectData(self.ui.backboneComboBox, name)

    def overrides(self):
        """Preset fields edited in Advanced, plus the bound fields."""
        text = self.ui.presetFieldsTextEdit.toPlainText().strip()
        try:
            edited = json.loads(text) if text else {}
        except json.JSONDecodeError as error:
            raise ValueError(
                _("The preset fields are not valid JSON (line {line}, column {col}): {msg}").format(
                    line=error.lineno, col=error.colno, msg=error.msg
                )
            ) from error
        p = self._parameterNode
        edited.update({
            "epochs": p.epochs, "batch_size": p.batchSize, "lr": p.learningRate, "seed": p.seed,
            "val_fraction": p.validationFraction, "backbone": p.backbone, "device": p.device,
        })  # fmt: skip
        return edited

    # -- dependencies --------------------------------------------------------------------------
    def ensureDependencies(self):
        """Ask to install missing packages (first use only). True when everything is ready."""
        from SAMTuneLib import Dependencies

        missing = Dependencies.missingRequirements()
        if not missing:
            return True
        details = "\n".join(r.describe() for r in missing)
        if not slicer.util.confirmOkCancelDisplay(
            _("SAMTune needs these Python packages, installed into Slicer's Python (a few minutes, "
              "PyTorch may be large):\n\n{details}\n\nInstall them now?").format(details=details)
        ):  # fmt: skip
            return False
        restart = Dependencies.restartNeeded(missing)
        with slicer.util.tryWithErrorDisplay(_("Installing the packages failed."), waitCursor=True):
            if not Dependencies.installRequirements(missing):
                return False
        if restart:
            slicer.util.infoDisplay(_("Packages were upgraded that Slicer had already loaded: restart Slicer."))
            return False
        self.refreshBackbonesAndDevices()
        return True

    # -- training ------------------------------------------------------------------------------
    def onTrain(self):
        if not self.cases:
            slicer.util.warningDisplay(_("Add at least one volume with its segmentation to the training data."))
            return
        if not self.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay(_("Training could not start."), waitCursor=True):
            client = self.logic.train(
                self.cases,
                preset=self._parameterNode.preset,
                structure=self.ui.structureComboBox.currentText or None,
                modelName=self._parameterNode.modelName or None,
                wait=False,
                callback=None,
                **self.overrides(),
            )
            self.startClient(client, _("Training"))

    def onResume(self):
        runDir = self.lastResult.run_dir if self.lastResult is not None and self.lastResult.resumable else None
        if runDir is None:
            runDir = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Run folder to resume"),
                                                         self.logic.runsFolder())  # fmt: skip
        if not runDir:
            return
        with slicer.util.tryWithErrorDisplay(_("The run could not be resumed."), waitCursor=True):
            self.startClient(self.logic.resume(runDir, wait=False), _("Resuming"))

    def onCancel(self):
        if self.client is not None:
            self.client.cancel()
            self.ui.progressLabel.text = _("Stopping after the current step; a checkpoint is being written...")
            self.updateButtons()

    def startClient(self, client, what):
        self.client = client
        self.client.on_event = self.onWorkerEvent
        self.client.on_log = self.onWorkerLog
        self.client.on_finished = self.onWorkerFinished
        self.ui.logTextEdit.clear()
        self.ui.progressBar.value = 0
        self.ui.progressLabel.text = _("{what}: starting the background process...").format(what=what)
        self.timer.start()
        self.updateButtons()

    def onPollWorker(self):
        if self.client is not None:
            self.client.poll()

    def onWorkerEvent(self, event):
        kind = event["event"]
        if kind == "progress":
            self.ui.progressBar.value = int(100 * self.client.fraction)
            self.ui.progressLabel.text = self.logic.describeProgress(event)
        elif kind == "metrics":
            self.ui.logTextEdit.appendPlainText(self.logic.describeMetrics(event))
            curve = os.path.join(self.client.run_dir or "", "training_curve.png")
            if self.client.run_dir and os.path.isfile(curve):
                pixmap = qt.QPixmap(curve)
                self.ui.curveLabel.setPixmap(pixmap.scaledToWidth(max(200, self.ui.curveLabel.width)))
        elif kind in ("log", "checkpoint", "started"):
            self.ui.logTextEdit.appendPlainText(self.logic.describeEvent(event))

    def onWorkerLog(self, line):
        self.ui.logTextEdit.appendPlainText(line)

    def onWorkerFinished(self, result):
        self.timer.stop()
        self.lastResult = result
        self.client = None
        self.ui.progressLabel.text = result.message if result.state.value != "finished" else _("Finished.")
        if result.state.value == "finished":
            self.ui.progressBar.value = 100
            self.refreshLibrary()
            model = (result.event or {}).get("model")
            if model:
                items = self.ui.modelsListWidget.findItems(os.path.basename(model), qt.Qt.MatchExactly)
                if items:
                    self.ui.modelsListWidget.setCurrentItem(items[0])
            if self.logic.pendingPrediction is not None:
                self.applyPrediction()
        elif result.state.value == "failed":
            slicer.util.errorDisplay(_("The background job failed:\n\n{message}").format(message=result.message))
        self.updateButtons()

    def stopJob(self, wait_s=5.0):
        """Cancel a running job and give it ``wait_s`` seconds to write its checkpoint, then kill it."""
        if self.client is None or self.client.state.done:
            return
        self.client.cancel()
        try:
            self.client.wait(timeout=wait_s)
        except TimeoutError:
            self.client.kill()
            self.client.wait(timeout=10)

    def onSceneStartClose(self, caller, event):
        self.stopJob()
        self.cases = []
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()
        self.refreshCases()

    def onAboutToQuit(self):
        self.stopJob()

    # -- library -------------------------------------------------------------------------------
    def refreshLibrary(self):
        current = self.ui.modelsListWidget.currentItem()
        currentName = current.text() if current else None
        self.ui.modelsListWidget.clear()
        for entry in self.logic.library().models():
            self.ui.modelsListWidget.addItem(entry.name)
        if currentName:
            items = self.ui.modelsListWidget.findItems(currentName, qt.Qt.MatchExactly)
            if items:
                self.ui.modelsListWidget.setCurrentItem(items[0])
        self.updateButtons()

    def selectedModel(self):
        item = self.ui.modelsListWidget.currentItem()
        return item.text() if item else None

    def onModelSelected(self, name):
        if not name:
            self.ui.modelCardTextEdit.setPlainText("")
        else:
            self.ui.modelCardTextEdit.setPlainText(self.logic.library().get(name).summary())
        self.updateButtons()

    def onRenameModel(self):
        name = self.selectedModel()
        newName = qt.QInputDialog.getText(slicer.util.mainWindow(), _("Rename model"), _("New name:"),
                                          qt.QLineEdit.Normal, name)  # fmt: skip
        if newName and newName != name:
            with slicer.util.tryWithErrorDisplay(_("The model could not be renamed.")):
                self.logic.library().rename(name, newName)
            self.refreshLibrary()

    def onDeleteModel(self):
        name = self.selectedModel()
        if name and slicer.util.confirmYesNoDisplay(_("Delete model '{name}' from disk?").format(name=name)):
            with slicer.util.tryWithErrorDisplay(_("The model could not be deleted.")):
                self.logic.library().delete(name)
            self.refreshLibrary()

    def onExportModel(self):
        name = self.selectedModel()
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), _("Export model"), f"{name}.zip", "*.zip")
        if path:
            with slicer.util.tryWithErrorDisplay(_("The model could not be exported.")):
                self.logic.library().export_zip(name, path)

    def onImportModel(self):
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), _("Import model (.zip)"), "", "*.zip")
        if not path:
            path = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("...or a model folder"))
        if path:
            with slicer.util.tryWithErrorDisplay(_("The model could not be imported.")):
                self.logic.library().import_model(path)
            self.refreshLibrary()

    def onExportTrainingSet(self):
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Folder for the training set"))
        if folder:
            with slicer.util.tryWithErrorDisplay(_("The training set could not be exported."), waitCursor=True):
                from SAMTuneLib.MRMLBridge import exportTrainingSet

                manifest = exportTrainingSet(self.cases, folder)
                slicer.util.infoDisplay(
                    _("Written {manifest}. On a server: samtune train --preset {preset} --train-manifest "
                      "{manifest} --out MODEL_FOLDER").format(manifest=manifest, preset=self._parameterNode.preset)
                )  # fmt: skip

    def onSegmentVolume(self):
        volume = self.ui.predictVolumeSelector.currentNode()
        name = self.selectedModel()
        if volume is None or name is None:
            slicer.util.warningDisplay(_("Choose a model in the library and a volume to segment."))
            return
        if not self.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay(_("Segmentation could not start."), waitCursor=True):
            client = self.logic.predict(volume, name, self.ui.outputSegmentationSelector.currentNode(), wait=False)
            self.startClient(client, _("Segmenting"))

    def applyPrediction(self):
        with slicer.util.tryWithErrorDisplay(_("The result could not be written into the segmentation.")):
            segmentation, self.undo = self.logic.applyPendingPrediction()
            self.ui.outputSegmentationSelector.setCurrentNode(segmentation)
        self.updateButtons()

    def onUndoWrite(self):
        if self.undo is not None and self.undo.canUndo:
            self.undo.undo()
        self.updateButtons()

    # -- state ---------------------------------------------------------------------------------
    def updateButtons(self):
        running = self.client is not None and not self.client.state.done
        hasModel = self.selectedModel() is not None
        self.ui.trainButton.enabled = bool(self.cases) and not running
        self.ui.cancelButton.enabled = running and self.client.state.value == "running"
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
    prediction run in the background worker (``python -m samtune.worker``) with Slicer's Python.

    Example (Python console)::

        logic = slicer.util.getModuleLogic("SAMTune")
        cases = [(getNode("heart1"), getNode("heart1-seg"), ["left atrium"])]
        result = logic.train(cases, preset="cpu_quick", modelName="LA", epochs=30, wait=True)
        seg = logic.predict(getNode("heart2"), "LA", wait=True)
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        ensureCoreOnPath()
        self.pendingPrediction = None
        self._timer = None
        self._clients = []

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
        """``[(name, weights present)]`` for the backbone picker (imports torch)."""
        from samtune.models import list_backbones
        from samtune.models.weights import weights_status

        return [(spec.name, weights_status(spec)[0]) for spec in list_backbones()]

    def backboneStatus(self, name):
        from samtune.models import get_backbone
        from samtune.models.weights import weights_status

        present, path, _verified = weights_status(get_backbone(name))
        return _("Weights present: {path}").format(path=path) if present else _("Weights not on this computer.")

    def backboneUrl(self, name):
        from samtune.models import get_backbone

        return get_backbone(name).url

    def downloadWeights(self, name, progress=None):
        from samtune.models import download_weights, get_backbone

        return download_weights(get_backbone(name), progress=progress)

    def useLocalWeights(self, name, path):
        """Copy a local weights file into the cache after checking its SHA-256 against the published one."""
        import pathlib

        from samtune.models import download_weights, get_backbone

        return download_weights(get_backbone(name), url=pathlib.Path(path).resolve().as_uri())

    def devices(self):
        """``[{"name", "text"}]``: CUDA devices with free memory, MPS, CPU."""
        from samtune.models.device import describe_devices

        found = []
        for device in describe_devices():
            text = device["label"]
            if device.get("free_bytes") is not None:
                text = _("{label} ({free:.1f} of {total:.1f} GB free)").format(
                    label=device["label"], free=device["free_bytes"] / 1e9, total=device["total_bytes"] / 1e9
                )
            found.append({"name": device["name"], "text": f"{device['name']}: {text}"})
        return found

    # -- jobs ----------------------------------------------------------------------------------
    def _cases(self, cases):
        """Accept ``CaseNodes`` or ``(volumeNode, segmentationNode, [segment names or ids])`` tuples."""
        from SAMTuneLib.MRMLBridge import CaseNodes, segmentIdsByName

        result = []
        for case in cases:
            if isinstance(case, CaseNodes):
                result.append(case)
                continue
            volumeNode, segmentationNode, *rest = case
            byName = segmentIdsByName(segmentationNode)
            wanted = rest[0] if rest else list(byName)
            ids = [byName.get(s, s) for s in wanted]
            result.append(CaseNodes(volumeNode, segmentationNode, ids, bool(rest[1]) if len(rest) > 1 else False))
        return result

    def _client(self, args, runDir=None, callback=None):
        from samtune.client import WorkerClient

        env = {"PYTHONPATH": os.pathsep.join(p for p in (LOGIC_DIR, os.environ.get("PYTHONPATH", "")) if p),
               "PYTHONUNBUFFERED": "1"}  # fmt: skip

        def launch(arguments, environment):
            return slicer.util.launchConsoleProcess(list(arguments), updateEnvironment=environment)

        return WorkerClient(args, env=env, run_dir=runDir, launcher=launch,
                            on_finished=callback)  # fmt: skip

    def _run(self, client, wait):
        client.start()
        if wait:
            while not client.state.done:
                client.poll()
                slicer.app.processEvents()
                qt.QThread.msleep(50)
            return client.result
        self._clients.append(client)
        if self._timer is None:
            self._timer = qt.QTimer()
            self._timer.setInterval(200)
            self._timer.timeout.connect(self._pollClients)
        self._timer.start()
        return client

    def _pollClients(self):
        """Poll console-started jobs (the widget polls its own)."""
        for client in list(self._clients):
            if client.on_event is None or client.state.done:  # the widget does not own this one
                client.poll()
            if client.state.done:
                self._clients.remove(client)
        if not self._clients and self._timer is not None:
            self._timer.stop()

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
            The ``JobResult`` (``wait=True``) or the running ``WorkerClient``.
        """
        import datetime

        from SAMTuneLib.MRMLBridge import exportTrainingSet

        from samtune.client import python_for_worker, worker_command

        cases = self._cases(cases)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        runDir = os.path.join(self.runsFolder(), f"{modelName or structure or 'model'}-{stamp}".replace(" ", "_"))
        dataDir = runDir + "-data"
        manifest = exportTrainingSet(cases, dataDir)
        library = self.library()
        modelPath = library.new_model_path(modelName or f"{structure or 'model'} {stamp}")
        job = {"version": 1, "kind": "train", "preset": preset, "manifest": manifest, "run_dir": runDir,
               "overrides": overrides, "model_dir": str(modelPath)}  # fmt: skip
        if structure:
            job["structure"] = structure
        if tiny:
            job["tiny"] = True
        jobPath = dataDir + os.sep + "job.json"
        with open(jobPath, "w", encoding="utf-8") as handle:
            json.dump(job, handle, indent=2)
        client = self._client(worker_command(python_for_worker(), job=jobPath), runDir, callback)
        return self._run(client, wait)

    def resume(self, runDir, wait=False, callback=None):
        """Continue a cancelled or crashed training run from its last checkpoint."""
        from samtune.client import python_for_worker, worker_command

        client = self._client(worker_command(python_for_worker(), resume=runDir), runDir, callback)
        return self._run(client, wait)

    def predict(self, volumeNode, model, segmentationNode=None, wait=True, callback=None, mode="replace",
                threshold=0.5, device="auto", sliceSearch=0):  # fmt: skip
        """Segment the whole volume automatically with a library model (or a model folder / backbone name).

        The result goes into ``segmentationNode`` (a new one when ``None``), in a segment named
        after the model's structure; writes into an existing segmentation can be undone
        (``logic.lastUndo.undo()``). ``sliceSearch=N`` (N >= 2) segments every N-th slice first and
        then only the slices around the structure (faster; can miss parts shorter than N slices).

        Returns:
            The segmentation node (``wait=True``) or the running ``WorkerClient``.
        """
        from SAMTuneLib.MRMLBridge import volumeToCore

        from samtune.client import python_for_worker, worker_command
        from samtune.data.io import write_volume

        modelPath = model
        structure = "SAMTune"
        if not os.path.isdir(model):
            try:
                entry = self.library().get(model)
                modelPath, structure = str(entry.path), entry.structures[0]
            except Exception:
                modelPath = model  # a backbone name (zero-shot)
        work = tempfile.mkdtemp(prefix="samtune-predict-")
        image = write_volume(volumeToCore(volumeNode), os.path.join(work, "image.nrrd"))
        out = os.path.join(work, "label.nrrd")
        job = {"version": 1, "kind": "predict", "image": str(image), "out": out, "model": modelPath,
               "threshold": threshold, "device": device, "slice_search": int(sliceSearch)}  # fmt: skip
        jobPath = os.path.join(work, "job.json")
        with open(jobPath, "w", encoding="utf-8") as handle:
            json.dump(job, handle)
        self.pendingPrediction = {"volume": volumeNode, "segmentation": segmentationNode, "out": out,
                                  "structure": structure, "mode": mode}  # fmt: skip

        def finished(result):
            if result.state.value == "finished" and wait is False and callback is not None:
                callback(result)

        client = self._client(worker_command(python_for_worker(), job=jobPath), None, finished)
        result = self._run(client, wait)
        if not wait:
            return result
        if result.state.value != "finished":
            raise RuntimeError(result.message)
        segmentation, _undo = self.applyPendingPrediction()
        return segmentation

    def applyPendingPrediction(self):
        """Write the finished prediction into its segmentation; returns ``(segmentationNode, undo)``."""
        from SAMTuneLib.MRMLBridge import SegmentationUndo, volumeToCore, writeMaskToSegment

        from samtune.data.io import read_label

        pending, self.pendingPrediction = self.pendingPrediction, None
        if pending is None:
            raise RuntimeError("There is no finished prediction to write.")
        volumeNode = pending["volume"]
        label = read_label(pending["out"], reference=volumeToCore(volumeNode))
        segmentation = pending["segmentation"]
        undo = None
        if segmentation is None:
            segmentation = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", f"{volumeNode.GetName()} SAMTune"
            )
            segmentation.CreateDefaultDisplayNodes()
        else:
            undo = SegmentationUndo(segmentation)
        writeMaskToSegment(label.array > 0, segmentation, volumeNode, name=pending["structure"],
                           mode=pending["mode"], undo=undo)  # fmt: skip
        self.lastUndo = undo
        return segmentation, undo

    # -- progress text ---------------------------------------------------------------------------
    @staticmethod
    def describeProgress(event):
        stage = event.get("stage")
        if stage == "train":
            eta = event.get("eta_s")
            etaText = "" if eta is None else _(", about {m}:{s:02d} left").format(m=int(eta) // 60, s=int(eta) % 60)
            return _("Epoch {e}/{E}, step {s}/{t}, loss {loss:.4f}{eta}").format(
                e=event.get("epoch"), E=event.get("epochs"), s=event.get("step"), t=event.get("total"),
                loss=event.get("loss") or float("nan"), eta=etaText,
            )  # fmt: skip
        if stage == "cache":
            return _("Computing image embeddings: {s}/{t} slices").format(s=event.get("step"), t=event.get("total"))
        return _("Segmenting: {s}/{t} slices").format(s=event.get("step"), t=event.get("total"))

    @staticmethod
    def describeMetrics(event):
        parts = [f"epoch {event.get('epoch')}", f"loss {event.get('loss')}"]
        for key in ("val_dice", "d2_dice"):
            if event.get(key) is not None:
                parts.append(f"{key} {event[key]:.3f}")
        return ", ".join(parts)

    @staticmethod
    def describeEvent(event):
        kind = event["event"]
        if kind == "checkpoint":
            return _("Checkpoint saved (epoch {e}, {reason}).").format(e=event.get("epoch"), reason=event.get("reason"))
        if kind == "started":
            return _("Started ({kind}).").format(kind=event.get("kind"))
        return str(event.get("message", ""))


class SAMTuneTest(ScriptedLoadableModuleTest):
    """Self-test run inside Slicer: ``slicer.selfTests['SAMTune']()``. Uses a tiny model (seconds)."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_CoreImports()
        self.setUp()
        self.test_BridgeRoundTrip()
        self.setUp()
        self.test_TinyTrainingAndPrediction()

    def test_CoreImports(self):
        self.delayDisplay(_("Checking that the SAMTune core package is importable"))
        version = SAMTuneLogic().coreVersion()
        self.assertTrue(version)
        logging.info("SAMTune core %s", version)

    def _phantomNodes(self):
        import numpy as np

        from samtune.data import make_phantom

        image, label = make_phantom(shape=(12, 64, 64), seed=0)
        volumeNode = slicer.util.addVolumeFromArray(image.array.astype(np.float32), name="phantom")
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "phantom-seg")
        segmentationNode.CreateDefaultDisplayNodes()
        from SAMTuneLib.MRMLBridge import writeMaskToSegment

        writeMaskToSegment(label.array == 1, segmentationNode, volumeNode, name="structure")
        return volumeNode, segmentationNode, label

    def test_BridgeRoundTrip(self):
        self.delayDisplay(_("MRML bridge round trip"))
        import numpy as np
        from SAMTuneLib.MRMLBridge import labelsFromSegments, segmentIdsByName

        volumeNode, segmentationNode, phantomLabel = self._phantomNodes()
        label, structures = labelsFromSegments(segmentationNode, list(segmentIdsByName(segmentationNode).values()),
                                               volumeNode)  # fmt: skip
        self.assertEqual(structures, {"structure": 1})
        self.assertTrue(np.array_equal(label.array == 1, phantomLabel.array == 1))

    def test_TinyTrainingAndPrediction(self):
        self.delayDisplay(_("Training a tiny model in the background worker"))
        volumeNode, segmentationNode, _phantom = self._phantomNodes()
        logic = SAMTuneLogic()
        result = logic.train([(volumeNode, segmentationNode, ["structure"], True)], preset="cpu_quick",
                             modelName=f"selftest {os.getpid()}", wait=True, tiny=True, epochs=2, batch_size=2,
                             backbone="sam_vit_b", device="cpu")  # fmt: skip
        self.assertEqual(result.state.value, "finished", result.message)
        model = result.event["model"]
        segmentation = logic.predict(volumeNode, model, wait=True)
        self.assertIsNotNone(segmentation)
        logic.library().delete(os.path.basename(model))
        self.delayDisplay(_("Test passed"))
