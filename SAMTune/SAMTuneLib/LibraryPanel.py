"""The panel's model library and Segment volume section.

A mixin of ``SAMTuneWidget`` (``SAMTune.py``): it uses the widget's ``ui``, ``logic``, ``cases``,
``job`` and ``_parameterNode``. Slicer-only code; what lies beneath it is tested in CI.
"""

import qt
import slicer
from slicer.i18n import tr as _


class LibraryPanel:
    """Model library section of the panel."""

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
                from SAMTuneLib.TrainingData import exportTrainingSet

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
            job = self.logic.predict(volume, name, self.ui.outputSegmentationSelector.currentNode(), wait=False,
                                     device=self._parameterNode.device if self._parameterNode else "auto")  # fmt: skip
            self.watchJob(job, _("Segmenting"))

    def onUndoWrite(self):
        if self.undo is not None and self.undo.canUndo:
            self.undo.undo()
        self.updateButtons()
