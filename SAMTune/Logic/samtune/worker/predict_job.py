"""Running a prediction job: read the image, load the model, segment, write the label map.

``run_predict_job`` is the one path from a :class:`~samtune.worker.jobs.PredictJob` to
:func:`samtune.predict.predict_volume`, for the worker, ``samtune predict`` and tests. A folder of
pictures (PNG, JPEG, BMP, TIFF) as ``image`` segments each of them into a folder of masks.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from samtune.data.formats import check_output_path, is_picture, mask_name_for
from samtune.errors import ConfigurationError, OutputError
from samtune.worker.events import Emit
from samtune.worker.jobs import PredictJob

#: Foreground value of a mask picture when the job keeps the default label value (1): 0/255 masks are
#: what picture viewers show and what 2D datasets ship.
PICTURE_FOREGROUND = 255


def picture_folder(path: str | Path) -> list[Path]:
    """The pictures of a folder, by name; empty when ``path`` is not a folder or holds none (a DICOM folder)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and is_picture(p) and not p.name.startswith("."))


#: Most uncertain slices an automatic volume prediction reports (which to correct first).
UNCERTAIN_SLICES = 10


def run_predict_job(job: PredictJob, *, emit: Emit, should_stop: Callable[[], bool] | None = None) -> Path:
    """Segment ``job.image`` and write ``job.out``; returns the output path (a folder for a folder of pictures).

    Raises:
        CancelledError: ``should_stop`` said so (checked after every slice); ``job.out`` is not written
            (with a folder of pictures: the masks already written stay, each one whole).
    """
    from samtune.data.image_io import read_volume
    from samtune.models.device import resolve_device
    from samtune.models.registry import get_backbone
    from samtune.predict.uncertainty import rank_slices

    trained = Path(job.model).expanduser().is_dir()
    if not trained and ("/" in job.model or "\\" in job.model or Path(job.model).expanduser().exists()):
        what = "a file" if Path(job.model).expanduser().exists() else "no such folder"
        raise ConfigurationError(
            f"--model '{job.model}' is not a model folder ({what}). "
            "Give the folder `samtune train --out` wrote, or a backbone name (see `samtune models`)."
        )
    if not trained:
        get_backbone(job.model)  # an unknown name fails before any reading
    pictures = picture_folder(job.image)
    out = Path(job.out).expanduser()
    if pictures:
        outputs = _mask_paths(job, pictures, out)
    else:
        check_output_path(out, inputs=[job.image])
        outputs = [out]
    device = resolve_device(job.device)
    image = None if pictures else read_volume(job.image)  # a bad image fails before the model loads
    model, name = _load_model(job, trained, device)
    emit({"event": "started", "kind": "predict", "image": job.image, "model": job.model, "device": str(device),
          "mode": job.mode, **({"pictures": len(pictures)} if pictures else {})})  # fmt: skip
    started = time.perf_counter()
    runtimes = _runtimes(job, model)
    # What ran is part of the result: the automatic decoder's runtime and arithmetic (int8 falls back to fp32).
    ran = {"decoder": runtimes[1].summary} if runtimes is not None else {}
    if image is not None:
        scores: dict[int, float] = {}
        n_fg = _segment_file(job, model, image, out, name, _slice_progress(emit, should_stop), runtimes, scores)
        _warn_if_untrained_and_empty(job, trained, n_fg, emit)
        ranked = [[s, round(u, 4)] for s, u in rank_slices(scores, UNCERTAIN_SLICES)] if trained else []
        extra = {"uncertain_slices": ranked} if ranked else {}
        emit({"event": "finished", "output": str(out), "foreground_voxels": n_fg,
              "seconds": time.perf_counter() - started, **ran, **extra})  # fmt: skip
        return out
    from samtune.errors import CancelledError

    n_fg, empty = 0, 0
    for n, (picture, target) in enumerate(zip(pictures, outputs)):
        if should_stop is not None and should_stop():
            raise CancelledError(
                f"Segmentation was cancelled after {n} of {len(pictures)} pictures; their masks are in '{out}', "
                "the others were not written."
            )
        found = _segment_file(job, model, read_volume(picture), target, name, None, runtimes)
        n_fg += found
        empty += found == 0
        emit({"event": "progress", "stage": "predict", "step": n + 1, "total": len(pictures), "message": picture.name})
    _warn_if_untrained_and_empty(job, trained, n_fg, emit)
    if empty and n_fg:
        emit({"event": "log", "level": "info", "message": f"{empty} of {len(pictures)} masks are empty."})
    emit({"event": "finished", "output": str(out), "foreground_voxels": n_fg, "pictures": len(pictures),
          "seconds": time.perf_counter() - started, **ran})  # fmt: skip
    return out


def _runtimes(job: PredictJob, model: Any) -> Any:
    """Automatic mode's encoder and decoder runtimes, resolved once per job (``None`` for prompts)."""
    if job.mode != "automatic":
        return None
    from samtune.models.runtime import decoder_runtime, encoder_runtime

    predict = job.predict
    return encoder_runtime(model, predict.runtime), decoder_runtime(
        model, predict.runtime, precision=predict.decoder_precision
    )


def _mask_paths(job: PredictJob, pictures: list[Path], out: Path) -> list[Path]:
    """Where each picture's mask goes: ``out/<name>`` (PNG for JPEG inputs), checked before any work."""
    if job.prompts is not None and not job.prompts.is_empty:
        raise ConfigurationError(
            f"'{job.image}' is a folder of {len(pictures)} pictures: prompts (--box, --point) belong to one "
            "picture. Segment a folder automatically with a fine-tuned model, or give one picture with its prompts."
        )
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out '{out}' is a file; a folder of pictures needs a folder for their masks.")
    if out.resolve() == Path(job.image).expanduser().resolve():
        raise OutputError(
            f"--out '{out}' is the input folder: the masks would replace the pictures. Choose another folder."
        )
    if not out.exists():
        if not out.parent.is_dir():
            raise OutputError(f"Cannot create '{out}': the folder '{out.parent}' does not exist. Create it first.")
        out.mkdir()
    targets = [out / mask_name_for(p) for p in pictures]
    clashes = sorted(name for name, count in Counter(t.name for t in targets).items() if count > 1)
    if clashes:
        raise OutputError(
            f"Pictures {clashes[:3]} would write the same mask (a JPEG and a PNG of one name?). Rename one of them."
        )
    for target in targets[:1]:  # one probe tells whether the folder can be written
        check_output_path(target, inputs=pictures)
    return targets


def _load_model(job: PredictJob, trained: bool, device: Any) -> tuple[Any, str]:
    from samtune.models.builders import build_model

    name = job.name
    if trained:
        from samtune.library.model_folder import load_trained_model

        model, card = load_trained_model(job.model, device=device, backbone_weights=job.weights)
        if name == "Segment_1":
            name = card.get("structure", name)
        return model, name
    return build_model(job.model, weights=job.weights, device=device), name


def _slice_progress(emit: Emit, should_stop: Callable[[], bool] | None) -> Callable[[int, int, str], None]:
    from samtune.errors import CancelledError

    def progress(done: int, total: int, message: str = "") -> None:
        if should_stop is not None and should_stop():
            raise CancelledError(f"Segmentation was cancelled after {done} of {total} slices; nothing was written.")
        emit({"event": "progress", "stage": "predict", "step": done, "total": total, "message": message})

    return progress


def _segment_file(
    job: PredictJob,
    model: Any,
    image: Any,
    out: Path,
    name: str,
    progress: Callable[[int, int, str], None] | None,
    runtimes: Any = None,
    uncertainty: dict[int, float] | None = None,
) -> int:
    """Segment one image (a :class:`~samtune.data.volume.Volume`) into ``out``; returns its foreground voxel count.
    ``uncertainty`` (automatic mode) receives each slice's uncertainty."""
    from samtune.data.image_io import write_label
    from samtune.data.slicing import resolve_axis
    from samtune.predict.user_prompts import prompts_from_spec
    from samtune.predict.volume import predict_volume

    prompts = prompts_from_spec(job.prompts, axis=resolve_axis(image, job.predict.slices.axis), shape=image.shape)
    label = predict_volume(model, image, job.predict, prompts=prompts, progress=progress, runtimes=runtimes,
                           uncertainty=uncertainty if prompts is None else None)  # fmt: skip
    value = job.predict.label_value
    if is_picture(out) and value == 1:
        label = label.with_array((label.array != 0).astype(label.array.dtype) * PICTURE_FOREGROUND)
        value = PICTURE_FOREGROUND
    n_fg = int((label.array != 0).sum())
    write_label(label, out, segment_names={name: value})
    return n_fg


def _warn_if_untrained_and_empty(job: PredictJob, trained: bool, foreground: int, emit: Emit) -> None:
    if foreground == 0 and job.mode == "automatic" and not trained:
        emit({"event": "log", "level": "warning", "message": (
            "The prediction is empty: pretrained backbones segment nothing without prompts. "
            "Give a box or point, or use a fine-tuned model.")})  # fmt: skip


__all__ = ["PICTURE_FOREGROUND", "picture_folder", "run_predict_job"]
