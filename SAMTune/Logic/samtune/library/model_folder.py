"""A trained model is a folder: the trainable weights only (safetensors) and a JSON model card.

The card records the backbone and the SHA-256 of its weights, the full training configuration,
the structure, a training-data summary, validation metrics, versions and the date. Loading
refuses a model whose backbone weights differ from those it was trained on.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

import samtune
from samtune.atomic import as_if_created
from samtune.config_io import config_from_dict
from samtune.errors import ConfigurationError, OutputError, TrainingDivergedError, WeightsError
from samtune.library.card import CARD_VERSION, MODEL_CARD, MODEL_WEIGHTS, read_model_card
from samtune.models.builders import build_model, build_tiny_model
from samtune.models.registry import get_backbone
from samtune.models.sam_model import SamModel
from samtune.models.weights import load_checkpoint, locate_weights, save_state_dict, sha256_file
from samtune.peft.apply import FineTuneConfig, apply_finetuning


def backbone_hash(name: str, weights: str | Path | None = None) -> str | None:
    """SHA-256 of the weights file a backbone loads from (``None`` when there is none)."""
    path = locate_weights(get_backbone(name), path=weights)
    return sha256_file(path) if path is not None and path.is_file() else None


def save_trained_model(
    folder: str | Path,
    model: SamModel,
    *,
    train_config: dict[str, Any],
    structure: str,
    data_summary: dict[str, Any],
    metrics: dict[str, Any],
    backbone_weights: str | Path | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the model folder atomically (built in a temporary sibling folder, then renamed).

    Raises:
        OutputError: The parent folder does not exist, or ``folder`` exists and is not empty.
    """
    folder = Path(folder).expanduser()
    if not folder.parent.is_dir():
        raise OutputError(f"Cannot write model '{folder}': the folder '{folder.parent}' does not exist.")
    if folder.exists() and any(folder.iterdir()):
        raise OutputError(f"Model folder '{folder}' already exists and is not empty. Choose a new name.")
    state: dict[str, torch.Tensor] = {n: p for n, p in model.named_parameters() if p.requires_grad}
    broken = [n for n, p in state.items() if not bool(torch.isfinite(p).all())]
    if broken:
        raise TrainingDivergedError(
            f"Not saving model '{folder.name}': {len(broken)} weight tensor(s) hold NaN or infinite values "
            f"(e.g. {broken[0]}); training diverged. Lower the learning rate and train again."
        )
    reserved = {"format", "card_version", "name", "backbone", "backbone_sha256", "structure", "training", "data",
                "metrics", "trainable_parameters", "versions", "created"}  # fmt: skip
    clash = sorted(reserved & set(extra or {}))
    if clash:
        raise ValueError(f"extra card fields may not replace the card's own: {clash}")
    card = {
        "format": "samtune-model",
        "card_version": CARD_VERSION,
        "name": folder.name,
        "backbone": model.name,
        "backbone_sha256": None if (extra or {}).get("tiny") else backbone_hash(model.name, backbone_weights),
        "structure": structure,
        "training": train_config,
        "data": data_summary,
        "metrics": metrics,
        "trainable_parameters": int(sum(p.numel() for p in state.values())),
        "versions": {
            "samtune": samtune.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    as_if_created(staging, directory=True)
    try:
        save_state_dict(state, staging / MODEL_WEIGHTS)
        (staging / MODEL_CARD).write_text(json.dumps(card, indent=2), encoding="utf-8")
        if folder.exists():
            folder.rmdir()
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def load_trained_model(
    folder: str | Path, *, device: str | torch.device = "cpu", backbone_weights: str | Path | None = None
) -> tuple[SamModel, dict[str, Any]]:
    """Rebuild a trained model: its backbone (hash-checked), its method, its weights.

    Raises:
        WeightsError: Damaged folder, or backbone weights that differ from the training ones.
    """
    folder = Path(folder).expanduser()
    card = read_model_card(folder)
    finetune_fields = (card.get("training") or {}).get("finetune") if isinstance(card.get("training"), dict) else None
    if not isinstance(card.get("backbone"), str) or not isinstance(finetune_fields, dict):
        raise WeightsError(
            f"The model card of '{folder}' is damaged: it needs a 'backbone' name and 'training.finetune' settings. "
            "Export the model again from where it was trained, or retrain it."
        )
    tiny = bool(card.get("tiny", False))
    expected = card.get("backbone_sha256")
    actual = None if tiny else backbone_hash(card["backbone"], backbone_weights)
    if expected and actual != expected:
        raise WeightsError(
            f"Model '{folder.name}' was trained on {card['backbone']} weights with SHA-256 {expected}, but the "
            f"weights found now hash to {actual}. Use the same backbone file it was trained with (--weights)."
        )
    if tiny:  # a dry-run model: rebuild the same random base from its seed
        model = build_tiny_model(card["backbone"], seed=int(card.get("tiny_seed", 0)))
    else:
        model = build_model(card["backbone"], weights=backbone_weights, device="cpu")
    try:
        finetune = config_from_dict(FineTuneConfig, finetune_fields, where="training.finetune")
    except ConfigurationError as error:
        raise WeightsError(f"The model card of '{folder}' is damaged: {error}") from error
    automatic: dict[str, Any] = card["automatic"] if isinstance(card.get("automatic"), dict) else {}
    if automatic.get("refine_decoder") == "pretrained":  # refined by the backbone's decoder, as trained
        model.keep_box_decoder()
    apply_finetuning(model, finetune)
    state = load_checkpoint(folder / MODEL_WEIGHTS)
    parameters = dict(model.named_parameters())
    unknown = [k for k in state if k not in parameters]
    if unknown:
        raise WeightsError(f"'{folder / MODEL_WEIGHTS}' has weights the model does not have (e.g. {unknown[:3]}).")
    missing = sorted(n for n, p in parameters.items() if p.requires_grad and n not in state)
    if missing:
        raise WeightsError(
            f"'{folder / MODEL_WEIGHTS}' lacks {len(missing)} of the model's trained weights (e.g. {missing[:3]}); "
            "the folder is incomplete. Export the model again from where it was trained, or retrain it."
        )
    wrong = [f"{n} {tuple(v.shape)} (expected {tuple(parameters[n].shape)})" for n, v in state.items()
             if tuple(v.shape) != tuple(parameters[n].shape)]  # fmt: skip
    if wrong:
        raise WeightsError(f"'{folder / MODEL_WEIGHTS}' does not fit its model card: {wrong[0]}.")
    with torch.no_grad():
        for name, value in state.items():
            parameters[name].copy_(value)
    if automatic.get("presence_threshold") is not None:
        model.presence_threshold = float(automatic["presence_threshold"])
    model.refine_passes = int(automatic.get("refine") or 0)
    from samtune.models.device import resolve_device

    model.to(resolve_device(device) if isinstance(device, str) else device)
    model.eval()
    return model, card
