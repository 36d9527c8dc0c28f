"""Background jobs of the Slicer module (SAMTuneLib.Jobs) on real MRML, real worker processes, tiny models.

Cancel through a launcher-like parent (PythonSlicer is CTK's AppLauncher: it ignores no signal it
forwards, it simply runs python-real as a child), each prediction writing only its own result, and
scene close dropping pending writes.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import vtk
from SAMTuneLib.Jobs import JobRunner
from SAMTuneLib.Segments import segmentIdsByName, segmentMask, writeMaskToSegment
from vtk.util import numpy_support

from samtune.library.model_folder import save_trained_model
from samtune.models import build_tiny_model
from samtune.peft.apply import FineTuneConfig, apply_finetuning
from samtune.worker.client import JobState, default_launcher

#: A launcher like CTK's AppLauncher: ignores SIGTERM/SIGINT itself, runs the real program as a child
#: that inherits its stdout (forwarded channels), and exits with the child's code.
LAUNCHER = (
    "import signal, subprocess, sys\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "sys.exit(subprocess.call(sys.argv[1:]))\n"
)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    net = build_tiny_model("sam_vit_b", seed=0)
    apply_finetuning(net, FineTuneConfig())
    folder = save_trained_model(tmp_path_factory.mktemp("models") / "atrium", net, train_config={"finetune": {}},
                                structure="atrium", data_summary={}, metrics={}, extra={"tiny": True})  # fmt: skip
    return str(folder)


def add_volume(scene, shape, name="vol", spacing=(1.0, 1.0, 2.0)):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    image = vtk.vtkImageData()
    image.SetDimensions(shape[2], shape[1], shape[0])
    image.AllocateScalars(vtk.VTK_FLOAT, 1)
    array = np.random.default_rng(len(name)).random(shape).astype(np.float32)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = array.ravel()
    node.SetAndObserveImageData(image)
    node.SetSpacing(*spacing)
    return node


def runner(tmp_path: Path, launcher_script: str | None = None) -> JobRunner:
    env = {"PYTHONPATH": os.pathsep.join(sys.path)}
    if launcher_script is None:
        return JobRunner(python=sys.executable, env=env)
    script = tmp_path / "launcher.py"
    script.write_text(launcher_script, encoding="utf-8")

    def launch(args, env):
        return default_launcher([sys.executable, str(script), *args], env)

    return JobRunner(python=sys.executable, env=env, launcher=launch)


def wait_for_progress(jobs: JobRunner, job, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not any(e["event"] == "progress" for e in job.client.events):
        jobs.poll()
        assert not job.state.done, job.result and job.result.message
        assert time.monotonic() < deadline
        time.sleep(0.02)


def gone(processes) -> bool:
    return all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in processes)


def test_cancelling_a_prediction_through_a_launcher_stops_the_worker_and_writes_nothing(scene, model, tmp_path):
    jobs = runner(tmp_path, LAUNCHER)
    volume = add_volume(scene, (1500, 16, 16), "long")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "target")
    job = jobs.predict(volume, model, structure="atrium", segmentationNode=segmentation)
    wait_for_progress(jobs, job)
    tree = list(job.client._tree)
    assert len(tree) >= 2  # the launcher and the worker it started
    job.cancel()
    result = jobs.wait(job, timeout=60)
    assert result.state is JobState.CANCELLED, result.message
    assert result.exit_code == 9  # the worker stopped on SIGTERM (the launcher passed its code on)
    assert "nothing was written" in result.message
    assert gone(tree)
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 0 and job.segmentationNode is segmentation
    assert not os.path.exists(job.workDir)


def test_kill_reaches_the_worker_after_the_signal_killed_its_launcher(tmp_path):
    # A launcher without signal handlers (as CTK's) dies of SIGTERM; its child, a worker stuck in a
    # step that ignores SIGTERM, keeps running and keeps the pipe open: the kill must still reach it.
    stuck = (
        'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print("up", flush=True); time.sleep(600)'
    )
    launcher = f"import subprocess, sys\nsys.exit(subprocess.call([sys.executable, '-c', {stuck!r}]))\n"
    jobs = runner(tmp_path, launcher)
    job = jobs.listDevices()  # any job: the launcher runs its own child instead
    job.client.kill_grace_s = 1.0
    deadline = time.monotonic() + 60
    while "up" not in job.client._tail:
        jobs.poll()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    job.cancel()
    [child] = [p for p in job.client._tree if p.pid != job.client._process.pid]
    assert job.client._process.wait(timeout=30) == -signal.SIGTERM  # the launcher is gone ...
    assert child.is_running()  # ... and the worker is not
    result = jobs.wait(job, timeout=60)
    assert result.state is JobState.CANCELLED
    assert gone([child])


def test_each_prediction_writes_only_its_own_result_into_its_own_segmentation(scene, model, tmp_path):
    jobs = runner(tmp_path)
    first, second = add_volume(scene, (6, 24, 20), "first"), add_volume(scene, (4, 16, 28), "second")
    preview = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "preview")
    old = np.zeros((6, 24, 20), dtype=bool)
    old[2, 3:6, 3:6] = True
    writeMaskToSegment(old, preview, first, name="preview")  # an old one-slice preview in segment 0
    cancelled = jobs.predict(first, model, structure="atrium", segmentationNode=preview)
    cancelled.cancel()
    one = jobs.predict(first, model, structure="atrium", segmentationNode=preview)
    two = jobs.predict(second, model, structure="atrium")  # into a new segmentation
    devices = jobs.listDevices()
    for job in (cancelled, one, two, devices):
        jobs.wait(job, timeout=180)
    assert cancelled.state is JobState.CANCELLED and not cancelled.pending
    assert one.state is JobState.FINISHED and two.state is JobState.FINISHED and one.error is None
    assert devices.result.event["devices"][-1]["name"] == "cpu"  # a finished non-prediction job wrote nothing
    assert one.segmentationNode is preview and list(segmentIdsByName(preview)) == ["preview", "atrium"]
    assert np.array_equal(segmentMask(preview, segmentIdsByName(preview)["preview"], first), old)
    assert segmentMask(preview, one.segmentId, first).shape == (6, 24, 20)
    assert one.undo is not None and one.undo.canUndo
    assert two.segmentationNode is not None and two.segmentationNode.GetName() == "second SAMTune"
    assert segmentMask(two.segmentationNode, two.segmentId, second).shape == (4, 16, 28)
    assert two.undo is None  # a new segmentation needs no undo
    assert scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 2


def test_stop_all_on_scene_close_drops_pending_writes_and_leaves_no_process(scene, model, tmp_path):
    jobs = runner(tmp_path)
    volume = add_volume(scene, (1500, 16, 16), "long")
    job = jobs.predict(volume, model, structure="atrium")
    wait_for_progress(jobs, job)
    tree = list(job.client._tree)
    jobs.stopAll(graceS=5.0)
    assert job.state is JobState.CANCELLED and not job.pending and jobs.jobs == []
    assert gone(tree)
    assert scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0
    jobs.stopAll()  # nothing left to stop: no error


def test_stop_all_never_raises_when_a_worker_ignores_the_stop(tmp_path):
    jobs = runner(tmp_path, "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)\n")
    job = jobs.listDevices()
    time.sleep(0.5)
    started = time.monotonic()
    jobs.stopAll(graceS=0.5)
    assert job.state is JobState.CANCELLED
    assert time.monotonic() - started < 20
    assert not psutil.pid_exists(job.client._process.pid) or psutil.Process(job.client._process.pid).status() == (
        psutil.STATUS_ZOMBIE
    )


def test_the_refinement_choice_reaches_the_workers_prediction_settings(scene, model, tmp_path):
    from samtune.worker.jobs import load_job

    settings = []

    def launch(args, env):  # read the job file the worker would be given; run nothing
        settings.append(load_job(args[args.index("--job") + 1]).predict.refine)
        return default_launcher([sys.executable, "-c", "pass"], env)

    jobs = JobRunner(python=sys.executable, env={}, launcher=launch)
    volume = add_volume(scene, (4, 8, 8))
    for refine in (None, 0, 2):
        jobs.predict(volume, model, structure="atrium", refine=refine)
        jobs.stopAll()
    assert settings == [None, 0, 2]
