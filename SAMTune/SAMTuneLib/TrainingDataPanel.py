"""The panel's training-data table: add, remove and check (volume, segmentation) rows.

A mixin of ``SAMTuneWidget`` (``SAMTune.py``): it uses the widget's ``ui``, ``logic``, ``cases``,
``job`` and ``_parameterNode``. Slicer-only code; what lies beneath it is tested in CI.
"""

import os

import qt
import slicer
from slicer.i18n import tr as _


class TrainingDataPanel:
    """Training data section of the panel."""

    # -- training data -------------------------------------------------------------------------
    def addCase(self, volumeNode, segmentationNode, segmentIds=None):
        from SAMTuneLib.Segments import segmentIdsByName
        from SAMTuneLib.TrainingData import CaseNodes

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
        from samtune.data.formats import PICTURE_SUFFIXES
        from samtune.train.manifest import label_file_for

        paths = qt.QFileDialog.getOpenFileNames(
            slicer.util.mainWindow(), _("Images to add (their labels lie beside them)"), "",
            _("Images (*.nii *.nii.gz *.nrrd *.mha *.mhd *.png *.jpg *.jpeg *.bmp)"),
        )  # fmt: skip
        missing, failed = [], []
        for path in paths:
            label = label_file_for(path)
            if label is None:
                missing.append(os.path.basename(path))
                continue
            try:
                # one picture is one image: without singleFile Slicer groups numbered files into a series
                properties = {"singleFile": True} if path.lower().endswith(PICTURE_SUFFIXES) else {}
                volume = slicer.util.loadVolume(path, properties)
                self.addCase(volume, self.loadLabelAsSegmentation(str(label), volume))
            except Exception as error:  # one unreadable pair must not stop the others
                failed.append(f"{os.path.basename(path)}: {error}")
        if missing:
            slicer.util.warningDisplay(
                _("No label file found beside: {names}. Name labels like 'heart_label.nii.gz' or "
                  "'heart.seg.nrrd' next to 'heart.nii.gz'.").format(names=", ".join(missing))
            )  # fmt: skip
        if failed:
            slicer.util.errorDisplay(_("These files could not be loaded:\n{lines}").format(lines="\n".join(failed)))

    @staticmethod
    def loadLabelAsSegmentation(path, volumeNode):
        """A segmentation from a label file: Slicer's segmentation reader for the formats it reads
        (seg.nrrd, nrrd, nii, nii.gz, ...), else a label volume imported into a new segmentation (.mha, .mhd)."""
        name = path.lower()
        if name.endswith((".seg.nrrd", ".nrrd", ".nhdr", ".nii", ".nii.gz", ".hdr")):
            return slicer.util.loadSegmentation(path)
        labelNode = slicer.util.loadLabelVolume(path, {"singleFile": True})
        try:
            segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", labelNode.GetName())
            segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
            if not slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelNode, segmentation):
                raise RuntimeError(f"Slicer could not turn '{path}' into segments.")
            return segmentation
        finally:
            slicer.mrmlScene.RemoveNode(labelNode)

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
                qt.QTimer.singleShot(0, self.refreshCases)  # never rebuild the table inside its own signal

    def refreshCases(self):
        from SAMTuneLib.TrainingData import caseRow

        if self._refreshingCases:
            return
        self._refreshingCases = True
        table = self.ui.casesTable
        table.blockSignals(True)
        names, problems = [], 0
        try:
            table.setRowCount(len(self.cases))
            for row, case in enumerate(self.cases):
                cells, status, segmentNames = caseRow(case)  # never raises: problems land in the Status column
                names.extend(n for n in segmentNames if n not in names)
                problems += 0 if status.ok else 1
                for column, value in enumerate(cells):
                    item = qt.QTableWidgetItem(value if column != len(cells) - 1 or not status.ok else _("OK"))
                    flags = qt.Qt.ItemIsSelectable | qt.Qt.ItemIsEnabled
                    if column == self.COLUMNS.index("fully"):
                        flags |= qt.Qt.ItemIsUserCheckable
                        item.setCheckState(qt.Qt.Checked if case.fullyLabelled else qt.Qt.Unchecked)
                    item.setFlags(flags)
                    if column == self.COLUMNS.index("status") and not status.ok:
                        item.setForeground(qt.QBrush(qt.QColor("red")))
                    item.setToolTip(value)
                    table.setItem(row, column, item)
        finally:
            table.blockSignals(False)
            self._refreshingCases = False
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
