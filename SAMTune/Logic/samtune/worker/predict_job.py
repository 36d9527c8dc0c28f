"""Running a prediction job: read the image, load the model, segment, write the label map.

``run_predict_job`` is the one path from a :class:`~samtune.worker.jobs.PredictJob` to
:func:`samtune.predict.predict_volume`, for the worker, ``samtune predict`` and tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from samtune.data.formats import check_output_path
from samtune.worker.events import Emit
from samtune.worker.jobs import PredictJob


def run_predict_job(job: PredictJob, *, emit: Emit, should_stop: Callable[[], bool] | None = None) -> Path:
    """Segment ``job.image`` and write ``job.out``; returns the output path.

    Raises:
        CancelledError: ``should_stop`` said so (checked after every slice); ``job.out`` is not written.
    """
    from samtune.data.image_io import read_volume, write_label
    from samtune.data.slicing import resolve_axis
    from samtune.errors import CancelledError
    from samtune.models.builders import build_model
    from samtune.models.device import resolve_device
    from samtune.models.registry import get_backbone
    from samtune.predict.user_prompts import prompts_from_spec
    from samtune.predict.volume import predict_volume

    out = Path(job.out)
    check_output_path(out, inputs=[job.image])
    trained = Path(job.model).is_dir()
    if not trained:
        get_backbone(job.model)  # an unknown name fails before any reading
    device = resolve_device(job.device)
    image = read_volume(job.image)
    prompts = prompts_from_spec(job.prompts, axis=resolve_axis(image, job.predict.slices.axis), shape=image.shape)
    name = job.name
    if trained:
        from samtune.library.model_folder import load_trained_model

        model, card = load_trained_model(job.model, device=device, backbone_weights=job.weights)
        if name == "Segment_1":
            name = card.get("structure", name)
    else:
        model = build_model(job.model, weights=job.weights, device=device)
    emit({"event": "started", "kind": "predict", "image": job.image, "model": job.model, "device": str(device),
          "mode": job.mode})  # fmt: skip
    started = time.perf_counter()

    def progress(done: int, total: int, message: str = "") -> None:
        if should_stop is not None and should_stop():
            raise CancelledError(f"Segmentation was cancelled after {done} of {total} slices; nothing was written.")
        emit({"event": "progress", "stage": "predict", "step": done, "total": total, "message": message})

    label = predict_volume(model, image, job.predict, prompts=prompts, progress=progress)
    n_fg = int((label.array != 0).sum())
    write_label(label, out, segment_names={name: job.predict.label_value})
    if n_fg == 0 and prompts is None and not trained:
        emit({"event": "log", "level": "warning", "message": (
            "The prediction is empty: pretrained backbones segment nothing without prompts. "
            "Give a box or point, or use a fine-tuned model.")})  # fmt: skip
    emit({"event": "finished", "output": str(out), "foreground_voxels": n_fg,
          "seconds": time.perf_counter() - started})  # fmt: skip
    return out


__all__ = ["run_predict_job"]
