"""The "SAM auto" Segment Editor effect: automatic and prompted SAM prediction with base or fine-tuned models.

Interactive work (one slice) runs in Slicer's process with a :class:`samtune.predict.session.PredictorSession`
that keeps the model loaded and caches slice embeddings, so after the first click on a slice each
further click only runs the prompt encoder and mask decoder. Whole-volume and range runs go to the
background worker through the SAMTune module's logic. Results are shown in a preview segmentation
and written into the selected segment only by Apply, after ``saveStateForUndo()``.
"""

import os

import numpy as np
import qt
import slicer
import vtk
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect
from slicer.i18n import tr as _

#: Pixels a press must move before it counts as a box drag instead of a click.
DRAG_PIXELS = 5
#: Sampling step of the optional slice search for whole-volume runs (samtune PredictConfig.slice_search).
SLICE_SEARCH_STEP = 4


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """SAM auto: fine-tuned or base SAM inside the Segment Editor."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "SAM auto"
        scriptedEffect.title = _("SAM auto")
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.ui = None
        self.session = None
        self.sessionKey = None
        self.points = []  # (ijk, label)
        self.box = None
        self.pressXy = None
        self.previewNode = None
        self.previewMask = None
        self.job = None
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.timeout.connect(self.onPoll)

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        return qt.QIcon(os.path.join(os.path.dirname(__file__), "SegmentEditorEffect.png"))

    def helpText(self):
        return _(
            "<html>Segment with the Segment Anything Model, base or fine-tuned in SAMTune.<p>"
            "<b>Automatic</b>: press Preview (current slice at once; a slice range or the whole volume in the "
            "background), then Apply. Needs a model fine-tuned for this structure.<br>"
            "<b>Prompted</b>: left click inside the structure, Shift+click or right click outside it, drag for a "
            "box; the mask on that slice updates after each click. Apply writes it into the selected segment "
            "(Ctrl+Z undoes).</html>"
        )

    # -- options -------------------------------------------------------------------------------
    def setupOptionsFrame(self):
        uiWidget = slicer.util.loadUI(os.path.join(os.path.dirname(__file__), "SAMAutoOptions.ui"))
        self.scriptedEffect.addOptionsWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self.ui.modeComboBox.addItem(_("Automatic"), "automatic")
        self.ui.modeComboBox.addItem(_("Prompted"), "prompted")
        for label, value in ((_("Current slice"), "slice"), (_("Slice range"), "range"), (_("Whole volume"), "volume")):
            self.ui.rangeComboBox.addItem(label, value)
        for label, value in ((_("auto"), "auto"), ("k (axial)", "k"), ("j (coronal)", "j"), ("i (sagittal)", "i")):
            self.ui.axisComboBox.addItem(label, value)
        for label, value in ((_("Add"), "add"), (_("Replace"), "replace"), (_("Intersect"), "intersect")):
            self.ui.writeModeComboBox.addItem(label, value)
        self.ui.modelComboBox.currentIndexChanged.connect(self.onModelChanged)
        self.ui.modeComboBox.currentIndexChanged.connect(self.updateGui)
        self.ui.rangeComboBox.currentIndexChanged.connect(self.updateGui)
        self.ui.axisComboBox.currentIndexChanged.connect(self.resetSession)
        self.ui.thresholdSpinBox.valueChanged.connect(self.resetSession)
        self.ui.previewButton.clicked.connect(self.onPreview)
        self.ui.clearPromptsButton.clicked.connect(self.onClearPrompts)
        self.ui.cancelButton.clicked.connect(self.onCancel)
        self.ui.applyButton.clicked.connect(self.onApply)
        self.refreshModels()
        self.updateGui()

    def refreshModels(self):
        self.ui.modelComboBox.clear()
        for name in ("litemedsam", "sam_vit_b", "medsam_vit_b"):
            self.ui.modelComboBox.addItem(_("{name} (base, prompted)").format(name=name), name)
        for entry in self.samtuneLogic().library().models():
            self.ui.modelComboBox.addItem(entry.name, str(entry.path))

    def samtuneLogic(self):
        return slicer.util.getModuleLogic("SAMTune")

    def onModelChanged(self, *_args):
        model = self.ui.modelComboBox.currentData or ""
        fineTuned = os.path.isdir(model)
        self.ui.structureComboBox.clear()
        if fineTuned:
            from samtune.io.model_folder import read_model_card

            self.ui.structureComboBox.addItem(read_model_card(model).get("structure", "structure"))
        self.ui.modeComboBox.currentIndex = 0 if fineTuned else 1
        self.resetSession()

    def updateGui(self, *_args):
        automatic = self.ui.modeComboBox.currentData == "automatic"
        self.ui.rangeComboBox.enabled = automatic
        self.ui.rangeWidget.enabled = automatic and self.ui.rangeComboBox.currentData == "range"
        self.ui.propagateCheckBox.enabled = not automatic
        self.ui.sliceSearchCheckBox.enabled = automatic and self.ui.rangeComboBox.currentData == "volume"
        self.ui.structureComboBox.enabled = self.ui.structureComboBox.count > 1
        running = self.job is not None and not self.job.state.done
        self.ui.cancelButton.enabled = running
        self.ui.previewButton.enabled = not running
        self.ui.applyButton.enabled = self.previewMask is not None and not running

    def activate(self):
        self.refreshModels()

    def deactivate(self):
        self.onClearPrompts()
        self.onCancel()

    def cleanup(self):
        self.timer.stop()
        self.onCancel()
        if self.session is not None:
            self.session.close()
        self.session = None

    # -- model and session ------------------------------------------------------------------------
    def sourceVolume(self):
        parameterSetNode = self.scriptedEffect.parameterSetNode()
        getter = getattr(parameterSetNode, "GetSourceVolumeNode", None) or parameterSetNode.GetMasterVolumeNode
        return getter()

    def resetSession(self, *_args):
        if self.session is not None:
            self.session.close()
        self.session, self.sessionKey = None, None

    def getSession(self):
        """The predictor session for the current model, volume, axis and threshold (built on first use)."""
        volumeNode = self.sourceVolume()
        model = self.ui.modelComboBox.currentData
        key = (model, volumeNode.GetID(), volumeNode.GetMTime(), self.ui.axisComboBox.currentData,
               self.ui.thresholdSpinBox.value)  # fmt: skip
        if self.session is None or self.sessionKey != key:
            if not self.samtuneLogic().dependenciesReady():
                raise RuntimeError(_("Open the SAMTune module once and install its packages first."))
            from SAMTuneLib.MRMLBridge import volumeToCore

            from samtune.io.model_folder import load_trained_model
            from samtune.models import build_model
            from samtune.predict.session import PredictorSession

            net = load_trained_model(model)[0] if os.path.isdir(model) else build_model(model)
            self.resetSession()
            self.session = PredictorSession(net.eval(), volumeToCore(volumeNode), axis=self.ui.axisComboBox.currentData,
                                            threshold=self.ui.thresholdSpinBox.value)  # fmt: skip
            self.sessionKey = key
        return self.session

    # -- interaction ---------------------------------------------------------------------------
    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        if self.ui is None or self.ui.modeComboBox.currentData != "prompted":
            return False
        if viewWidget.className() != "qMRMLSliceWidget" or self.sourceVolume() is None:
            return False
        xy = callerInteractor.GetEventPosition()
        if eventId == vtk.vtkCommand.LeftButtonPressEvent:
            self.pressXy = xy
            return True
        if eventId == vtk.vtkCommand.LeftButtonReleaseEvent and self.pressXy is not None:
            start, self.pressXy = self.pressXy, None
            if abs(xy[0] - start[0]) + abs(xy[1] - start[1]) > DRAG_PIXELS:
                self.box = (self.xyToIjkContinuous(start, viewWidget), self.xyToIjkContinuous(xy, viewWidget))
            else:
                label = 0 if callerInteractor.GetShiftKey() else 1
                self.points.append((self.xyToIjkContinuous(xy, viewWidget), label))
            self.runPrompted()
            return True
        if eventId == vtk.vtkCommand.RightButtonPressEvent:
            self.points.append((self.xyToIjkContinuous(xy, viewWidget), 0))
            self.runPrompted()
            return True
        return False

    def xyToIjkContinuous(self, xy, viewWidget):
        """Slice-view pixel -> world RAS -> the source volume's continuous IJK (transforms included)."""
        from SAMTuneLib.MRMLBridge import rasToIjk

        return rasToIjk(self.sourceVolume(), self.xyToRas(xy, viewWidget))

    def runPrompted(self):
        with slicer.util.tryWithErrorDisplay(_("SAM could not segment this slice."), waitCursor=True):
            session = self.getSession()
            sliceComponent = 2 - session.axis
            current = int(round(self.points[-1][0][sliceComponent])) if self.points else None
            if self.box is not None:
                current = int(round(self.box[1][sliceComponent]))
            points = [p for p, _label in self.points if int(round(p[sliceComponent])) == current]
            labels = [lab for p, lab in self.points if int(round(p[sliceComponent])) == current]
            box = None
            if self.box is not None:
                low, high = self.box
                low = np.array(low)
                low[sliceComponent] = high[sliceComponent]
                box = (*low, *high)
            index, mask = session.predict_ijk(points, labels, box=box)
            masks = {index: mask}
            if self.ui.propagateCheckBox.checked:
                masks.update(session.propagate(index, mask, direction=1))
                masks.update(session.propagate(index, mask, direction=-1))
            else:
                session.prefetch([index - 1, index + 1])
            self.showPreview(masks, session)

    def onPreview(self):
        volumeNode = self.sourceVolume()
        if volumeNode is None:
            return
        if self.ui.modeComboBox.currentData == "prompted":
            if self.points or self.box:
                self.runPrompted()
            return
        extent = self.ui.rangeComboBox.currentData
        if extent == "slice":
            with slicer.util.tryWithErrorDisplay(_("SAM could not segment this slice."), waitCursor=True):
                session = self.getSession()
                index = self.currentSliceIndex(session)
                self.showPreview({index: session.predict_slice(index)}, session)
            return
        logic = self.samtuneLogic()
        self.ensurePreviewNode()
        search = SLICE_SEARCH_STEP if extent == "volume" and self.ui.sliceSearchCheckBox.checked else 0
        self.job = logic.predict(volumeNode, self.ui.modelComboBox.currentData, self.previewNode, wait=False,
                                 threshold=self.ui.thresholdSpinBox.value, sliceSearch=search)  # fmt: skip
        self.job.on_finished = self.onJobFinished
        self.ui.statusLabel.text = _("Segmenting in the background...")
        self.timer.start()
        self.updateGui()

    def currentSliceIndex(self, session):
        """Slice shown in the Red view (or the first slice view) for the session's axis."""
        from SAMTuneLib.MRMLBridge import rasToIjk

        sliceNode = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        center = [sliceNode.GetSliceToRAS().GetElement(r, 3) for r in range(3)]
        ijk = rasToIjk(self.sourceVolume(), center)
        return int(np.clip(round(ijk[2 - session.axis]), 0, session.n_slices - 1))

    def onPoll(self):
        if self.job is not None:
            self.job.poll()
            self.ui.progressBar.value = int(100 * self.job.fraction)

    def onJobFinished(self, result):
        self.timer.stop()
        if result.state.value == "finished":
            segmentation, _undo = self.samtuneLogic().applyPendingPrediction()
            from SAMTuneLib.MRMLBridge import segmentMask

            segmentId = segmentation.GetSegmentation().GetNthSegmentID(0)
            self.previewMask = segmentMask(segmentation, segmentId, self.sourceVolume())
            self.ui.statusLabel.text = _("Preview ready: Apply writes it into the selected segment.")
        else:
            self.ui.statusLabel.text = result.message
        self.job = None
        self.updateGui()

    def onCancel(self):
        if self.job is not None and not self.job.state.done:
            self.job.cancel()

    def onClearPrompts(self):
        self.points, self.box, self.previewMask = [], None, None
        if self.previewNode is not None:
            slicer.mrmlScene.RemoveNode(self.previewNode)
            self.previewNode = None
        if self.ui is not None:
            self.updateGui()

    # -- preview and apply ---------------------------------------------------------------------------
    def ensurePreviewNode(self):
        if self.previewNode is None or self.previewNode.GetScene() is None:
            self.previewNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "SAM auto preview")
            self.previewNode.CreateDefaultDisplayNodes()
            self.previewNode.GetDisplayNode().SetOpacity(0.5)
            self.previewNode.SetHideFromEditors(True)
        return self.previewNode

    def showPreview(self, masks, session):
        volume = self.sourceVolume()
        full = np.zeros(session.volume.shape, dtype=bool)
        moved = np.moveaxis(full, session.axis, 0)
        for index, mask in masks.items():
            moved[index] = mask
        self.previewMask = full
        from SAMTuneLib.MRMLBridge import writeMaskToSegment

        writeMaskToSegment(full, self.ensurePreviewNode(), volume, name="preview", mode="replace", color=(1, 1, 0))
        self.ui.statusLabel.text = _("{n} slice(s) in the preview; {v} voxels.").format(n=len(masks), v=int(full.sum()))
        self.updateGui()

    def onApply(self):
        if self.previewMask is None:
            return
        from SAMTuneLib.MRMLBridge import maskToOrientedImage, segmentMask

        volume = self.sourceVolume()
        mode = self.ui.writeModeComboBox.currentData
        mask = self.previewMask
        segmentationNode = self.scriptedEffect.parameterSetNode().GetSegmentationNode()
        segmentId = self.scriptedEffect.parameterSetNode().GetSelectedSegmentID()
        if mode == "intersect":
            mask = mask & segmentMask(segmentationNode, segmentId, volume)
        self.scriptedEffect.saveStateForUndo()
        modification = (slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeAdd if mode == "add"
                        else slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeSet)  # fmt: skip
        self.scriptedEffect.modifySelectedSegmentByLabelmap(maskToOrientedImage(mask, volume), modification)
        self.onClearPrompts()
