"""Background jobs of the SAMTune module: training, resuming, whole-volume prediction, device listing.

One :class:`JobRunner` polls every job — the panel's, the effect's and the console's share it
through the module logic — so there is one poller, not one per caller. Each job owns what must
happen when it ends: a :class:`PredictionJob` owns its pending write, applies it only when *that*
prediction finishes, and drops it (and its temporary folder) when it is cancelled, fails, or the
scene closes. A finished training run never writes a segmentation.

Qt-free and Slicer-app-free: the module connects one ``qt.QTimer`` to :meth:`JobRunner.poll` and
passes ``slicer.util.launchConsoleProcess`` as the launcher; tests drive the same code with a plain
loop, real worker processes and real MRML from ``slicer-core``.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any, Callable

from samtune.data.slicing import SliceConfig
from samtune.predict.config import PredictConfig
from samtune.worker.client import WORKER_ENV, JobResult, JobState, WorkerClient, python_for_worker, worker_command
from samtune.worker.jobs import PredictJob, TrainJob
from SAMTuneLib.Geometry import gridOf, volumeToCore
from SAMTuneLib.Segments import SegmentationUndo, writeMaskToSegment
from SAMTuneLib.TrainingData import casesFrom, exportTrainingSet

logger = logging.getLogger(__name__)

#: Seconds a job gets to stop (and write its checkpoint) on scene close or quit before it is killed.
STOP_GRACE_S = 5.0


def _writeJob(job, path: str) -> str:
    """Write a job file the worker reads (the core's own job classes and serialiser, written atomically)."""
    from pathlib import Path

    from samtune.atomic import atomic_write_text
    from samtune.worker.jobs import job_to_dict

    atomic_write_text(Path(path), json.dumps(job_to_dict(job), indent=2) + "\n")
    return path


class Job:
    """One worker job: its client, and what its callers want done when it ends.

    Attributes:
        client: The :class:`samtune.worker.client.WorkerClient` (``on_event`` / ``on_log`` are free for a watcher).
        kind: ``train``, ``resume``, ``predict`` or ``devices``.
    """

    def __init__(self, client: WorkerClient, kind: str) -> None:
        self.client = client
        self.kind = kind
        self._listeners: list[Callable[[Job], None]] = []
        client.on_finished = self._onClientFinished

    @property
    def state(self) -> JobState:
        return self.client.state

    @property
    def result(self) -> JobResult | None:
        return self.client.result

    @property
    def run_dir(self) -> str | None:
        return self.client.run_dir

    def whenDone(self, callback: Callable[[Job], None]) -> None:
        """Call ``callback(job)`` on the polling thread once the job has ended (at once if it has)."""
        if self.state.done:
            callback(self)
        else:
            self._listeners.append(callback)

    def cancel(self) -> None:
        """Ask the job to stop (training keeps a checkpoint); non-blocking."""
        self.client.cancel()

    def discard(self) -> None:
        """Forget what the job would still do when it ends (nothing for most jobs)."""

    def _complete(self, result: JobResult) -> None:
        """What the job itself does when it ends, before the listeners are called."""

    def _onClientFinished(self, result: JobResult) -> None:
        try:
            self._complete(result)
        finally:
            for callback in self._listeners:
                try:
                    callback(self)
                except Exception:  # one caller's failing callback must not stop the others
                    logger.exception("A SAMTune job callback failed")
            self._listeners = []


class PredictionJob(Job):
    """A whole-volume (or slice-range) prediction and the write it owns.

    When the worker finishes, the label map it wrote is read onto the volume's grid and written
    into ``segmentationNode`` (a new segmentation in the volume's scene when ``None``; an existing
    one gets an undo state first). After a cancel, a failure or :meth:`discard`, nothing is written.

    Attributes:
        segmentationNode: Where the result went (set once written).
        segmentId: The segment written.
        undo: Undo for a write into an existing segmentation.
        mask: The result as a boolean array on the volume's grid (the effect's preview keeps it).
        error: Why the finished result could not be written, if it could not.
    """

    def __init__(self, client: WorkerClient, *, volumeNode, segmentationNode, outPath: str, workDir: str,
                 structure: str, mode: str = "replace") -> None:  # fmt: skip
        super().__init__(client, "predict")
        self.volumeNode = volumeNode
        self.segmentationNode = segmentationNode
        self.segmentId: str | None = None
        #: The finished result on the volume's grid (``[k, j, i]`` booleans), once written.
        self.mask = None
        self.undo: SegmentationUndo | None = None
        self.error: str | None = None
        self.workDir = workDir
        self._pending: dict[str, Any] | None = {"out": outPath, "structure": structure, "mode": mode}

    @property
    def pending(self) -> bool:
        """A write is still owed (the job has not ended, or has not been applied yet)."""
        return self._pending is not None

    def discard(self) -> None:
        self._pending = None
        if self.workDir and os.path.isdir(self.workDir):
            shutil.rmtree(self.workDir, ignore_errors=True)

    def cancel(self) -> None:
        super().cancel()
        self._pending = None  # a cancelled prediction never writes, even if its worker finished meanwhile

    def _complete(self, result: JobResult) -> None:
        try:
            if result.state is JobState.FINISHED and self._pending is not None:
                self._apply(self._pending)
        except Exception as error:  # reported through .error; the listeners still run
            logger.exception("Writing the prediction failed")
            self.error = f"The result could not be written into the segmentation: {error}"
        finally:
            self.discard()

    def _apply(self, pending: dict[str, Any]) -> None:
        from samtune.data.image_io import read_label

        volume = self.volumeNode
        if volume is None or volume.GetScene() is None:
            raise ValueError("The volume was removed from the scene before its segmentation finished.")
        label = read_label(pending["out"], reference=gridOf(volume))  # the grid only: no copy of the voxels
        segmentation = self.segmentationNode
        if segmentation is not None and segmentation.GetScene() is None:
            raise ValueError("The target segmentation was removed from the scene.")
        if segmentation is None:
            segmentation = volume.GetScene().AddNewNodeByClass("vtkMRMLSegmentationNode", f"{volume.GetName()} SAMTune")
            segmentation.CreateDefaultDisplayNodes()
        else:
            self.undo = SegmentationUndo(segmentation)
        mask = label.array > 0
        self.segmentId = writeMaskToSegment(mask, segmentation, volume, name=pending["structure"],
                                            mode=pending["mode"], undo=self.undo)  # fmt: skip
        self.mask = mask
        self.segmentationNode = segmentation


class JobRunner:
    """Starts worker jobs and polls them all from one place.

    Args:
        launcher: ``launcher(args, env)`` -> a ``Popen``-like process (Slicer:
            ``slicer.util.launchConsoleProcess``); ``None`` = :func:`samtune.worker.client.default_launcher`.
        python: Interpreter that runs the worker (Slicer: ``PythonSlicer``).
        env: Environment added for the worker (e.g. ``PYTHONPATH`` with the core package).
        timer: Optional object with ``start()`` / ``stop()`` (a ``qt.QTimer`` whose timeout calls
            :meth:`poll`), started while jobs run.
    """

    def __init__(self, *, launcher=None, python: str | None = None, env: dict[str, str] | None = None,
                 timer=None) -> None:  # fmt: skip
        self.launcher = launcher
        self.python = python or python_for_worker()
        self.env = {**WORKER_ENV, **(env or {})}
        self.timer = timer
        self.jobs: list[Job] = []

    # -- starting ------------------------------------------------------------------------------
    def _client(self, args: list[str], runDir: str | None = None) -> WorkerClient:
        kwargs = {"launcher": self.launcher} if self.launcher is not None else {}
        return WorkerClient(args, env=dict(self.env), run_dir=runDir, **kwargs)

    def start(self, job: Job) -> Job:
        job.client.start()
        self.jobs.append(job)
        if self.timer is not None:
            self.timer.start()
        return job

    def train(self, cases, *, runsFolder: str, modelDir: str, preset: str | None = "cpu_quick",
              structure: str | None = None, name: str = "model", tiny: bool = False,
              overrides: dict[str, Any] | None = None, parent: str | None = None) -> Job:  # fmt: skip
        """Export ``cases`` (``CaseNodes`` or tuples) and start training; returns the running job.
        With ``parent`` (a model folder) it retrains that model from its weights (``preset`` may be ``None``)."""
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        runDir = os.path.join(runsFolder, f"{name}-{stamp}".replace(" ", "_"))
        dataDir = runDir + "-data"
        manifest = exportTrainingSet(casesFrom(cases), dataDir)
        job = TrainJob(manifest=manifest, run_dir=runDir, preset=preset, overrides=dict(overrides or {}),
                       structure=structure or None, model_dir=modelDir, tiny=tiny, parent=parent)  # fmt: skip
        jobPath = _writeJob(job, os.path.join(dataDir, "job.json"))
        return self.start(Job(self._client(worker_command(self.python, job=jobPath), runDir), "train"))

    def resume(self, runDir: str) -> Job:
        """Continue a cancelled or crashed training run from its last checkpoint."""
        return self.start(Job(self._client(worker_command(self.python, resume=runDir), runDir), "resume"))

    def predict(self, volumeNode, modelPath: str, *, structure: str = "SAMTune", segmentationNode=None,
                mode: str = "replace", threshold: float = 0.5, device: str = "auto", sliceSearch: int = 0,
                axis: str = "auto", sliceRange: tuple[int, int] | None = None,
                refine: int | None = None) -> PredictionJob:  # fmt: skip
        """Segment ``volumeNode`` in the background with a model folder or backbone name.

        Args:
            sliceRange: ``(first, last)`` slices along ``axis``, both included; ``None`` = all.
            refine: Automatic mode's refinement passes (``PredictConfig.refine``); ``None`` = the model's own.
        """
        from samtune.data.image_io import write_volume

        work = tempfile.mkdtemp(prefix="samtune-predict-")
        try:
            image = write_volume(volumeToCore(volumeNode), os.path.join(work, "image.nrrd"))
            out = os.path.join(work, "label.nrrd")
            slices = None
            if sliceRange is not None:
                first, last = (int(v) for v in sliceRange)
                slices = (min(first, last), max(first, last) + 1)
            settings = PredictConfig(threshold=float(threshold), slice_search=int(sliceSearch), slice_range=slices,
                                     slices=SliceConfig(axis=axis), refine=refine)  # fmt: skip
            job = PredictJob(image=str(image), out=out, model=modelPath, device=device, name=structure,
                             predict=settings)  # fmt: skip
            jobPath = _writeJob(job, os.path.join(work, "job.json"))
            client = self._client(worker_command(self.python, job=jobPath))
            prediction = PredictionJob(client, volumeNode=volumeNode, segmentationNode=segmentationNode, outPath=out,
                                       workDir=work, structure=structure, mode=mode)  # fmt: skip
            return self.start(prediction)  # type: ignore[return-value]
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    def listDevices(self) -> Job:
        """Ask a worker process which devices this machine has (its ``result.event["devices"]``)."""
        return self.start(Job(self._client(worker_command(self.python, list_devices=True)), "devices"))

    # -- running -------------------------------------------------------------------------------
    @property
    def running(self) -> list[Job]:
        return [job for job in self.jobs if not job.state.done]

    def poll(self) -> None:
        """Handle every job's new output; forget ended jobs; stop the timer when none is left."""
        for job in list(self.jobs):
            try:
                job.client.poll()
            except Exception:  # a watcher's callback failed: keep polling the others
                logger.exception("Polling a SAMTune job failed")
            if job.state.done:
                self.jobs.remove(job)
        if not self.jobs and self.timer is not None:
            self.timer.stop()

    def wait(self, job: Job, *, timeout: float | None = None, processEvents: Callable[[], None] | None = None,
             interval: float = 0.05) -> JobResult:  # fmt: skip
        """Block until ``job`` ends, polling every job (and processing GUI events when given)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not job.state.done:
            self.poll()
            if processEvents is not None:
                processEvents()
            if job.state.done:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"The SAMTune job did not finish within {timeout} s (state: {job.state.value}).")
            time.sleep(interval)
        self.poll()
        assert job.result is not None
        return job.result

    def stopAll(self, graceS: float = STOP_GRACE_S) -> None:
        """Stop every job (scene close, quit): cancel, wait ``graceS`` for checkpoints, then kill. Never raises.

        Pending prediction writes are dropped: nothing is written into a scene that is closing.
        """
        jobs = list(self.jobs)
        for job in jobs:
            job.discard()
            job.cancel()
        deadline = time.monotonic() + graceS
        while any(not job.state.done for job in jobs) and time.monotonic() < deadline:
            self.poll()
            time.sleep(0.05)
        for job in jobs:
            if job.state.done:
                continue
            try:
                job.client.kill()
                job.client.wait(timeout=10)
            except Exception:  # a process that cannot be killed must not stop Slicer from closing
                logger.exception("A SAMTune worker could not be stopped")
        self.poll()
