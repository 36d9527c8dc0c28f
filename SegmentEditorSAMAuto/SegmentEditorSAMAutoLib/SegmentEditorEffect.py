"""The "SAM auto" Segment Editor effect: automatic and prompted SAM prediction with base or fine-tuned models.

Interactive work (one slice) runs in Slicer's process through a
:class:`samtune.predict.session.SessionPool`: the model stays loaded and slice embeddings stay cached
per ``(axis, slice)`` across clicks, views, threshold changes and re-activations of the effect, until
the model or the volume changes. Prompts are kept per slice (:class:`samtune.predict.prompt_book.PromptBook`),
and a click segments the slice of the view it was made in (axial, sagittal, coronal, or an oblique
view aligned with the volume's axes). Range and whole-volume runs go to the background worker
through the SAMTune module's job runner; each run writes into a freshly cleared preview node and
hands over its mask. A prompted click rewrites only its slices of the preview segment.
Results are written into the selected segment only by Apply, after ``saveStateForUndo()``, through
the editor's own modifier labelmap (resampled onto the segmentation's geometry).

Nothing here imports PyTorch before the user acts: the options open and list models without it,
and the first click or Preview offers the installation.
"""

import contextlib
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
#: Name of the segment in the preview node.
PREVIEW_SEGMENT = "SAM auto preview"
#: Its colour.
PREVIEW_COLOR = (1.0, 1.0, 0.0)


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """SAM auto: fine-tuned or base SAM inside the Segment Editor."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "SAM auto"
        scriptedEffect.title = _("SAM auto")
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.ui = None
        self.pool = None
        self.prompts = None
        self.pressXy = None
        self.lastView = None
        self.previewNode = None
        self.previewMask = None
        self.job = None
        self._connections = []
        self.stroke = []  # slice-view pixels a drag passed
        self.previewSlices = {}  # axis -> slices of the preview the user looked at (prompted, current slice)
        self.touched = {}  # (volume node id, axis) -> slices corrected or marked correct, for training
        self.uncertain = []  # (axis, slice) of the last whole-volume run, the least sure first

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
            "background), then Apply. Needs a model fine-tuned for this structure. <i>Refine each mask from its "
            "box</i> redraws each mask from the box around it (more accurate after training on a few slices; "
            "slower).<br>"
            "<b>Prompted</b>: left click inside the structure, Shift+click or right click outside it; a drag draws "
            "a box, a scribble (Shift: outside) or a lasso, as chosen; in any slice view. The mask on that slice "
            "updates after each prompt, and prompts stay with their slice. <i>Refine the selected segment</i> "
            "gives SAM what the segment holds there, so a click corrects it. Apply writes the preview into the "
            "selected segment (Ctrl+Z undoes), kept out of the other segments you chose.<p>"
            "<b>Correct and retrain</b>: after a whole-volume preview, <i>Next uncertain slice</i> shows where the "
            "model is least sure. Fix those slices (or mark them <i>correct</i>), <i>Add to training data</i>, "
            "then <i>Retrain</i>: the model continues from its weights on old and new slices.</html>"
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
        for label, value in ((_("Box"), "box"), (_("Scribble"), "scribble"), (_("Lasso"), "lasso")):
            self.ui.dragComboBox.addItem(label, value)
        protect = ((_("Keep out of all"), "all"), (_("Keep out of visible"), "visible"),
                   (_("Keep out of completed"), "completed"), (_("Editor's masking settings"), "none"))  # fmt: skip
        for label, value in protect:
            self.ui.protectComboBox.addItem(label, value)
        for signal, slot in (
            (self.ui.modelComboBox.currentIndexChanged, self.onModelChanged),
            (self.ui.modeComboBox.currentIndexChanged, self.updateGui),
            (self.ui.rangeComboBox.currentIndexChanged, self.updateGui),
            (self.ui.previewButton.clicked, self.onPreview),
            (self.ui.clearPromptsButton.clicked, self.onClearPrompts),
            (self.ui.cancelButton.clicked, self.onCancel),
            (self.ui.applyButton.clicked, self.onApply),
            (self.ui.nextUncertainButton.clicked, self.onNextUncertain),
            (self.ui.acceptSliceButton.clicked, self.onAcceptSlice),
            (self.ui.addToTrainingButton.clicked, self.onAddToTraining),
            (self.ui.retrainButton.clicked, self.onRetrain),
        ):
            signal.connect(slot)
            self._connections.append((signal, slot))
        self.refreshModels()
        self.updateGui()

    def refreshModels(self):
        """Base backbones from the registry and the library's models; the user's choice is kept."""
        from samtune.models.registry import list_backbones

        combo = self.ui.modelComboBox
        current = combo.currentData
        combo.blockSignals(True)
        try:
            combo.clear()
            for spec in list_backbones():
                combo.addItem(_("{name} (base, prompted)").format(name=spec.name), spec.name)
            for entry in self.samtuneLogic().library().models():
                combo.addItem(_("{name} ({structure})").format(name=entry.name, structure=entry.structures[0]),
                              str(entry.path))  # fmt: skip
            index = combo.findData(current) if current else -1
            combo.currentIndex = max(index, 0)
        finally:
            combo.blockSignals(False)
        if combo.currentData != current:
            self.onModelChanged()

    def samtuneLogic(self):
        return slicer.util.getModuleLogic("SAMTune")

    def onModelChanged(self, *_args):
        fineTuned = os.path.isdir(self.ui.modelComboBox.currentData or "")
        self.ui.modeComboBox.currentIndex = 0 if fineTuned else 1
        self.onClearPrompts()

    def updateGui(self, *_args):
        automatic = self.ui.modeComboBox.currentData == "automatic"
        extent = self.ui.rangeComboBox.currentData
        self.ui.rangeComboBox.enabled = automatic
        self.ui.rangeWidget.enabled = automatic and extent == "range"
        self.ui.propagateCheckBox.enabled = not automatic
        self.ui.sliceSearchCheckBox.enabled = automatic and extent == "volume"
        self.ui.refineMasksCheckBox.enabled = automatic
        running = self.job is not None and not self.job.state.done
        self.ui.cancelButton.enabled = running
        self.ui.previewButton.enabled = not running
        self.ui.applyButton.enabled = self.previewMask is not None and not running
        self.ui.dragComboBox.enabled = self.ui.refineSegmentCheckBox.enabled = not automatic
        self.ui.nextUncertainButton.enabled = bool(self.uncertain)
        self.ui.addToTrainingButton.enabled = any(self.touched.values())
        self.ui.retrainButton.enabled = os.path.isdir(self.ui.modelComboBox.currentData or "")

    def activate(self):
        self.refreshModels()  # models trained since; the choice, the session and its embeddings stay
        self.updateRangeLimits()

    def sourceVolumeNodeChanged(self):
        """Prompts, a preview and its uncertain slices belong to the volume they were made on (Slicer 5.4+)."""
        self.uncertain = []
        self.onClearPrompts()
        self.updateRangeLimits()

    def updateRangeLimits(self):
        volume = self.sourceVolume()
        if self.ui is None or volume is None or volume.GetImageData() is None:
            return
        last = max(volume.GetImageData().GetDimensions()) - 1
        for box in (self.ui.rangeStartSpinBox, self.ui.rangeEndSpinBox):
            box.maximum = last  # Qt's default maximum (99) would hide the slices above it
            box.toolTip = _("Slice index along the chosen axis (auto: the axis with the largest spacing).")

    def deactivate(self):
        self.onCancel()

    def cleanup(self):
        """Slicer 5.10+ calls this when the editor goes; older versions release the pool with the effect."""
        for signal, slot in self._connections:
            signal.disconnect(slot)
        self._connections = []
        self.onCancel()
        if self.pool is not None:
            self.pool.close()
        self.pool = None
        self.ui = None

    # -- model and session ------------------------------------------------------------------------
    def sourceVolume(self):
        parameterSetNode = self.scriptedEffect.parameterSetNode()
        getter = getattr(parameterSetNode, "GetSourceVolumeNode", None) or parameterSetNode.GetMasterVolumeNode
        return getter()

    def ensureDependencies(self):
        logic = self.samtuneLogic()
        if logic.dependenciesReady():
            return True
        widget = slicer.util.getModuleWidget("SAMTune")
        return bool(widget.ensureDependencies())  # asks, installs, says when Slicer must restart

    def getSession(self, axis):
        """The predictor session for the current model and volume along numpy ``axis`` (built on first use)."""
        from SAMTuneLib.Geometry import volumeToCore

        from samtune.predict.session import SessionPool

        volumeNode = self.sourceVolume()
        model = self.ui.modelComboBox.currentData

        def loadModel():
            from samtune.library.model_folder import load_trained_model
            from samtune.models import build_model

            return load_trained_model(model)[0] if os.path.isdir(model) else build_model(model)

        if self.pool is None:
            self.pool = SessionPool()
        volumeKey = (volumeNode.GetID(), volumeNode.GetImageData().GetMTime())
        return self.pool.get(model, loadModel, volumeKey, lambda: volumeToCore(volumeNode), axis=axis,
                             threshold=self.ui.thresholdSpinBox.value, refine=self.refinePasses())  # fmt: skip

    def refinePasses(self):
        """Automatic mode's refinement passes: the model's own (``None``) unless the user turned them off (0)."""
        return None if self.ui.refineMasksCheckBox.checked else 0

    # -- views -----------------------------------------------------------------------------------
    def viewAxis(self, viewWidget):
        """The volume's numpy axis the slice view cuts across."""
        from SAMTuneLib.Geometry import sliceAxisOfView

        return sliceAxisOfView(self.sourceVolume(), viewWidget.mrmlSliceNode().GetSliceToRAS())

    def currentView(self):
        """The slice view the user worked in last, else the first one shown in the layout."""
        if self.lastView is not None and self.lastView.isVisible():
            return self.lastView
        layoutManager = slicer.app.layoutManager()
        for name in layoutManager.sliceViewNames():
            widget = layoutManager.sliceWidget(name)
            if widget is not None and widget.isVisible():
                return widget
        raise RuntimeError(_("Show a slice view of the volume to segment its current slice."))

    def currentSlice(self, viewWidget, axis):
        from SAMTuneLib.Geometry import sliceIndexAt

        sliceToRas = viewWidget.mrmlSliceNode().GetSliceToRAS()
        center = [sliceToRas.GetElement(r, 3) for r in range(3)]
        return sliceIndexAt(self.sourceVolume(), center, axis)

    # -- interaction ---------------------------------------------------------------------------
    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        if self.ui is None or viewWidget.className() != "qMRMLSliceWidget" or self.sourceVolume() is None:
            return False
        prompted = self.ui.modeComboBox.currentData == "prompted"
        if eventId in (vtk.vtkCommand.MouseMoveEvent, vtk.vtkCommand.EnterEvent):
            self.lastView = viewWidget  # "the current slice" is the one in the view the user works in
            if eventId == vtk.vtkCommand.MouseMoveEvent and prompted and self.pressXy is not None:
                self.stroke.append(callerInteractor.GetEventPosition())  # a scribble or lasso being drawn
                return True
            return False
        if not prompted:
            return False
        xy = callerInteractor.GetEventPosition()
        if eventId == vtk.vtkCommand.LeftButtonPressEvent:
            self.pressXy, self.stroke = xy, [xy]
            return True
        if eventId == vtk.vtkCommand.LeftButtonReleaseEvent and self.pressXy is not None:
            start, self.pressXy = self.pressXy, None
            label = 0 if callerInteractor.GetShiftKey() else 1
            path, self.stroke = [*self.stroke, xy], []
            drag = self.ui.dragComboBox.currentData
            if abs(xy[0] - start[0]) + abs(xy[1] - start[1]) <= DRAG_PIXELS and len(path) < 4:
                self.addPrompt(viewWidget, point=xy, label=label)
            elif drag == "scribble":
                self.addPrompt(viewWidget, scribble=path, label=label)
            elif drag == "lasso":
                self.addPrompt(viewWidget, lasso=path)
            else:
                self.addPrompt(viewWidget, box=(start, xy))
            return True
        if eventId == vtk.vtkCommand.RightButtonPressEvent:
            self.addPrompt(viewWidget, point=xy, label=0)
            return True
        return False

    def xyToIjkContinuous(self, xy, viewWidget):
        """Slice-view pixel -> world RAS -> the source volume's continuous IJK (transforms included)."""
        from SAMTuneLib.Geometry import rasToIjk

        return rasToIjk(self.sourceVolume(), self.xyToRas(xy, viewWidget))

    def addPrompt(self, viewWidget, point=None, label=1, box=None, scribble=None, lasso=None):
        with contextlib.suppress(Exception):  # shown by tryWithErrorDisplay already; the click stays handled
            self._addPrompt(viewWidget, point, label, box, scribble, lasso)

    def _addPrompt(self, viewWidget, point, label, box, scribble, lasso):
        from samtune.predict.prompt_book import PromptBook

        if not self.ensureDependencies():
            return
        if self.prompts is None:
            self.prompts = PromptBook()
        axis = self.viewAxis(viewWidget)
        with slicer.util.tryWithErrorDisplay(_("This prompt could not be used."), waitCursor=False):
            toIjk = lambda xy: self.xyToIjkContinuous(xy, viewWidget)  # noqa: E731
            if box is not None:
                key = self.prompts.set_box(*(toIjk(c) for c in box), axis=axis)
            elif scribble is not None:
                key = self.prompts.add_scribble([toIjk(xy) for xy in scribble], label, axis=axis)
            elif lasso is not None:
                key = self.prompts.set_lasso([toIjk(xy) for xy in lasso], axis=axis)
            else:
                key = self.prompts.add_point(toIjk(point), label, axis=axis)
        self.runPrompted(*key)

    def segmentSlice(self, axis, index):
        """The selected segment on one slice (the volume's grid), for the mask input; ``None`` when empty."""
        from SAMTuneLib.Segments import segmentMask

        parameterSetNode = self.scriptedEffect.parameterSetNode()
        segmentId = parameterSetNode.GetSelectedSegmentID()
        if not segmentId:
            return None
        mask = np.moveaxis(segmentMask(parameterSetNode.GetSegmentationNode(), segmentId, self.sourceVolume()), axis, 0)
        return mask[index] if mask[index].any() else None

    def runPrompted(self, axis, index):
        with slicer.util.tryWithErrorDisplay(_("SAM could not segment this slice."), waitCursor=True):
            session = self.getSession(axis)
            entry = self.prompts.prompts(axis, index)
            current = self.segmentSlice(axis, index) if self.ui.refineSegmentCheckBox.checked else None
            index, mask = session.predict_entry(entry, mask=current)
            masks = {index: mask}
            if self.ui.propagateCheckBox.checked:
                masks.update(session.propagate(index, mask, direction=1))
                masks.update(session.propagate(index, mask, direction=-1))
            else:
                session.prefetch([index - 1, index + 1])
            self.showPreview(masks, session)

    def onPreview(self):
        volumeNode = self.sourceVolume()
        if volumeNode is None or not self.ensureDependencies():
            return
        if self.ui.modeComboBox.currentData == "prompted":
            for axis, index in self.prompts.slices if self.prompts else []:
                with contextlib.suppress(Exception):  # shown already; go on with the other slices
                    self.runPrompted(axis, index)
            return
        extent = self.ui.rangeComboBox.currentData
        if extent == "slice":
            with slicer.util.tryWithErrorDisplay(_("SAM could not segment this slice."), waitCursor=True):
                view = self.currentView()
                axis = self.viewAxis(view)
                session = self.getSession(axis)
                index = self.currentSlice(view, axis)
                self.showPreview({index: session.predict_slice(index)}, session)
            return
        sliceRange = None
        if extent == "range":
            sliceRange = (self.ui.rangeStartSpinBox.value, self.ui.rangeEndSpinBox.value)
        search = SLICE_SEARCH_STEP if extent == "volume" and self.ui.sliceSearchCheckBox.checked else 0
        self.previewMask = None  # the preview node is emptied: Apply must not write what is no longer shown
        self.previewSlices = {}  # a background run's slices are not reviewed: Apply does not mark them correct
        with slicer.util.tryWithErrorDisplay(_("Segmentation could not start."), waitCursor=True):
            self.job = self.samtuneLogic().predict(
                volumeNode, self.ui.modelComboBox.currentData, self.clearedPreviewNode(), wait=False,
                threshold=self.ui.thresholdSpinBox.value, sliceSearch=search, axis=self.ui.axisComboBox.currentData,
                sliceRange=sliceRange, refine=self.refinePasses(), recordUndo=False,
            )  # fmt: skip
            self.job.client.on_event = self.onJobEvent
            self.job.whenDone(self.onJobDone)
            self.ui.statusLabel.text = _("Segmenting in the background...")
        self.updateGui()

    def onJobEvent(self, event):
        if self.ui is not None and self.job is not None and event["event"] == "progress":
            self.ui.progressBar.value = int(100 * self.job.client.fraction)
        if self.ui is not None and event["event"] == "finished" and event.get("uncertain_slices"):
            from SAMTuneLib.Geometry import gridOf

            from samtune.data.slicing import resolve_axis

            axis = resolve_axis(gridOf(self.sourceVolume()), self.ui.axisComboBox.currentData)
            self.uncertain = [(axis, int(s)) for s, _score in event["uncertain_slices"]]

    def onJobDone(self, job):
        if job is not self.job or self.ui is None:
            return  # an older run (its preview node was emptied since), or the effect is gone
        self.job = None
        if job.result.state.value == "finished" and job.mask is not None:
            self.previewMask = job.mask  # the job's own result on the volume's grid: nothing is read back
            segment = job.segmentationNode.GetSegmentation().GetSegment(job.segmentId)
            if segment is not None:  # the preview segment: prompted clicks then edit its slices in place
                segment.SetName(PREVIEW_SEGMENT)
                segment.SetColor(*PREVIEW_COLOR)
            self.ui.statusLabel.text = _("Preview ready: Apply writes it into the selected segment.")
        else:
            self.ui.statusLabel.text = job.error or job.result.message
        self.updateGui()

    def onNextUncertain(self):
        """Show the next slice the model was least sure of (the list of the last whole-volume run)."""
        from SAMTuneLib.Geometry import ijkToRas

        if not self.uncertain:
            return
        axis, index = self.uncertain.pop(0)
        volume = self.sourceVolume()
        dims = volume.GetImageData().GetDimensions()
        center = [(d - 1) / 2.0 for d in dims]
        center[2 - axis] = float(index)
        ras = ijkToRas(volume, center)
        layoutManager = slicer.app.layoutManager()
        for name in layoutManager.sliceViewNames():
            widget = layoutManager.sliceWidget(name)
            if widget is not None and widget.isVisible() and self.viewAxis(widget) == axis:
                widget.mrmlSliceNode().JumpSliceByOffsetting(*ras)
                self.lastView = widget
                break
        else:
            slicer.util.warningDisplay(_("Show a slice view across this axis to see the slice."))
        left = len(self.uncertain)
        self.ui.statusLabel.text = _("Slice {index}: the model is unsure here ({n} more to check).").format(
            index=index, n=left)  # fmt: skip
        self.updateGui()

    def markTouched(self, axis, slices):
        volume = self.sourceVolume()
        if volume is not None and slices:
            self.touched.setdefault((volume.GetID(), int(axis)), set()).update(int(s) for s in slices)

    def onAcceptSlice(self):
        with slicer.util.tryWithErrorDisplay(_("No slice to mark."), waitCursor=False):
            view = self.currentView()
            axis = self.viewAxis(view)
            index = self.currentSlice(view, axis)
            self.markTouched(axis, [index])
            count = sum(len(v) for v in self.touched.values())
            text = _("Slice {index} marked correct; {n} slice(s) to add to the training data.")
            self.ui.statusLabel.text = text.format(index=index, n=count)
        self.updateGui()

    def onAddToTraining(self):
        """The corrected and accepted slices of the selected segment become rows of SAMTune's training table."""
        volume = self.sourceVolume()
        parameterSetNode = self.scriptedEffect.parameterSetNode()
        segmentationNode, segmentId = parameterSetNode.GetSegmentationNode(), parameterSetNode.GetSelectedSegmentID()
        if volume is None or not segmentId:
            slicer.util.warningDisplay(_("Select the segment you corrected first."))
            return
        logic = self.samtuneLogic()
        with slicer.util.tryWithErrorDisplay(_("The corrections could not be added to the training data.")):
            for (volumeId, axis), slices in list(self.touched.items()):
                if volumeId == volume.GetID() and slices:
                    case = logic.addCorrections(volume, segmentationNode, segmentId, sorted(slices), axis)
                    del self.touched[(volumeId, axis)]
                    text = _("{n} corrected slice(s) of {volume} are in the training table ({rows} row(s)); "
                             "Retrain to use them.")  # fmt: skip
                    self.ui.statusLabel.text = text.format(n=len(case.slices), volume=volume.GetName(),
                                                           rows=len(logic.trainingCases))  # fmt: skip
            widget = slicer.util.getModuleWidget("SAMTune")
            if widget is not None and hasattr(widget, "refreshCases"):
                widget.refreshCases()
        self.updateGui()

    def onRetrain(self):
        model = self.ui.modelComboBox.currentData
        if not self.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay(_("Retraining could not start."), waitCursor=True):
            job = self.samtuneLogic().retrain(model)
            panel = slicer.util.getModuleWidget("SAMTune")
            if panel is not None and hasattr(panel, "watchJob"):  # its progress bar, log and Cancel follow the job
                panel.watchJob(job, _("Retraining"))
            text = _("Retraining {model} in the background; progress in the SAMTune module.")
            self.ui.statusLabel.text = text.format(model=os.path.basename(model))
            job.whenDone(lambda done: self.refreshModels() if self.ui is not None else None)

    def onCancel(self):
        if self.job is not None and not self.job.state.done:
            self.job.cancel()  # the job drops its write: nothing lands in the preview

    def onClearPrompts(self):
        if self.prompts is not None:
            self.prompts.clear()
        self.previewMask = None
        self.previewSlices = {}
        if self.previewNode is not None and self.previewNode.GetScene() is not None:
            slicer.mrmlScene.RemoveNode(self.previewNode)
        self.previewNode = None
        if self.ui is not None:
            self.updateGui()

    # -- preview and apply ---------------------------------------------------------------------------
    def clearedPreviewNode(self):
        """The preview segmentation, emptied (each run writes into a node that holds nothing else)."""
        if self.previewNode is None or self.previewNode.GetScene() is None:
            self.previewNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "SAM auto preview")
            self.previewNode.CreateDefaultDisplayNodes()
            self.previewNode.GetDisplayNode().SetOpacity(0.5)
            self.previewNode.SetHideFromEditors(True)
        self.previewNode.GetSegmentation().RemoveAllSegments()
        volume = self.sourceVolume()
        if volume is not None:  # in the volume's frame, so that slice edits are written in place
            self.previewNode.SetAndObserveTransformNodeID(volume.GetTransformNodeID())
        return self.previewNode

    def showPreview(self, masks, session):
        """Show ``{slice index: mask}`` along ``session.axis``; in prompted mode the other slices' masks stay."""
        from SAMTuneLib.Segments import segmentIdsByName, writeMaskToSegment, writeSlicesToSegment

        shape = tuple(session.volume.shape[:3])
        prompted = self.ui.modeComboBox.currentData == "prompted"
        keep = prompted and self.previewMask is not None and self.previewMask.shape == shape
        full = self.previewMask.copy() if keep else np.zeros(shape, dtype=bool)
        moved = np.moveaxis(full, session.axis, 0)
        for index, mask in masks.items():
            moved[index] = mask
        self.previewMask = full  # what Apply writes
        if not keep:
            self.previewSlices = {}
        self.previewSlices.setdefault(session.axis, set()).update(masks)  # slices the user saw segmented
        node = self.previewNode
        if keep and node is not None and node.GetScene() is not None and PREVIEW_SEGMENT in segmentIdsByName(node):
            writeSlicesToSegment(masks, session.axis, node, self.sourceVolume(), name=PREVIEW_SEGMENT,
                                 color=PREVIEW_COLOR)  # fmt: skip
        else:  # a new preview, or the shown one is gone: write it whole
            writeMaskToSegment(full, self.clearedPreviewNode(), self.sourceVolume(), name=PREVIEW_SEGMENT,
                               color=PREVIEW_COLOR)  # fmt: skip
        self.ui.statusLabel.text = _("{n} slice(s) in the preview; {v} voxels.").format(n=len(masks), v=int(full.sum()))
        self.updateGui()

    def onApply(self):
        if self.previewMask is None:
            return
        try:
            with slicer.util.tryWithErrorDisplay(_("The preview could not be written into the segment.")):
                self._apply()
        except Exception:  # shown already
            return
        self.onClearPrompts()

    def _apply(self):
        from SAMTuneLib.Segments import combineWithSegment, maskToModifierLabelmap, protectedMask, segmentMask

        volume = self.sourceVolume()
        mode = self.ui.writeModeComboBox.currentData
        protect = self.ui.protectComboBox.currentData
        mask = self.previewMask
        parameterSetNode = self.scriptedEffect.parameterSetNode()
        segmentationNode = parameterSetNode.GetSegmentationNode()
        segmentId = parameterSetNode.GetSelectedSegmentID()
        if mode == "intersect" or protect != "none":  # the segment's new content, written as a whole
            current = segmentMask(segmentationNode, segmentId, volume)
            kept = protectedMask(segmentationNode, segmentId, volume, protect) if protect != "none" else None
            mask, mode = combineWithSegment(mask, current, mode, kept), "replace"
        modifier = self.scriptedEffect.defaultModifierLabelmap()  # the segmentation's geometry, as Slicer expects
        maskToModifierLabelmap(mask, volume, segmentationNode, modifier)
        self.scriptedEffect.saveStateForUndo()
        modification = (slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeAdd if mode == "add"
                        else slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeSet)  # fmt: skip
        self.scriptedEffect.modifySelectedSegmentByLabelmap(modifier, modification)
        for axis, slices in self.previewSlices.items():  # what the user prompted and looked at counts as corrected
            self.markTouched(axis, slices)
