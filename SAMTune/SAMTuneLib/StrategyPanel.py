"""The panel's strategy section: preset, backbone and its weights, device, Advanced fields, first-use installation.

A mixin of ``SAMTuneWidget`` (``SAMTune.py``): it uses the widget's ``ui``, ``logic``, ``cases``,
``job`` and ``_parameterNode``. Slicer-only code; what lies beneath it is tested in CI.
"""

import json

import qt
import slicer
from slicer.i18n import tr as _


class StrategyPanel:
    """Strategy section of the panel."""

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
            resolved = preset.train_config()  # the preset's values, defaults included (blo_sam: no validation split)
            self._parameterNode.preset = name
            self._parameterNode.epochs = int(resolved.epochs)
            self._parameterNode.batchSize = int(resolved.batch_size)
            self._parameterNode.learningRate = float(resolved.lr)
            self._parameterNode.validationFraction = float(resolved.val_fraction)
            self._parameterNode.seed = int(resolved.seed)
            self._selectData(self.ui.backboneComboBox, resolved.backbone)

    def onBackboneChanged(self, *_args):
        name = self.ui.backboneComboBox.currentData
        if not name:
            return
        if self._parameterNode:
            self._parameterNode.backbone = name
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
        """What the user changed: the bound fields and the Advanced JSON, minus what the preset already says."""
        from samtune.config_io import merge_overrides
        from samtune.train.presets import changed_fields

        text = self.ui.presetFieldsTextEdit.toPlainText().strip()
        try:
            edited = json.loads(text) if text else {}
        except json.JSONDecodeError as error:
            raise ValueError(
                _("The preset fields are not valid JSON (line {line}, column {col}): {msg}").format(
                    line=error.lineno, col=error.colno, msg=error.msg
                )
            ) from error
        if not isinstance(edited, dict):
            raise ValueError(_("The preset fields must be a JSON object, like the preset's own."))
        p = self._parameterNode
        bound = {
            "epochs": p.epochs, "batch_size": p.batchSize, "lr": p.learningRate, "seed": p.seed,
            "val_fraction": p.validationFraction, "backbone": p.backbone, "device": p.device,
        }  # fmt: skip
        return changed_fields(p.preset, merge_overrides(edited, bound))

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
        try:  # tryWithErrorDisplay shows the error, then raises it again
            with slicer.util.tryWithErrorDisplay(_("Installing the packages failed."), waitCursor=True):
                installed = Dependencies.installRequirements(missing)  # we asked: PyTorchUtils asks no second time
        except Exception:
            return False
        if not installed:
            return False
        if restart:
            slicer.util.infoDisplay(_("Packages were upgraded that Slicer had already loaded: restart Slicer."))
            return False
        self.refreshBackbonesAndDevices()
        return True
