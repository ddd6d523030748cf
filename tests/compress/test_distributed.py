"""Distillation under torchrun (real gloo processes), the sharded teacher store, and resuming an interrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _phantom_pairs import write_phantom_pairs

import edgemed
from edgemed.artifacts import StudentCheckpoint
from edgemed.compress import TeacherStore, TeacherStoreConfig, config_from_dict, distill, precompute_teacher
from edgemed.errors import ConfigError, EdgemedWarning, InputError
from edgemed.phantom import PhantomConfig

SMALL = PhantomConfig(shape=(48, 40, 24), spacing_mm=(8.0, 8.0, 10.0))
WORKER = Path(__file__).with_name("_dist_worker.py")
_PRE = {"spacing_mm": [8.0, 8.0], "context_slices": 1, "pad_multiple": 4}
# No augmentation and no EMA, 40 epochs at a moderate rate: training that converges, so that the
# Dice compares the runs rather than the noise of an unconverged one (measured over seeds 0-2:
# 1 vs 2 processes within 0.5 points, one process vs another seed up to 4 points).
MATCH = {"organs": ["liver"], "student": "unet2d", "student_kwargs": {"widths": [8, 16, 32]}, "epochs": 40,
         "batch_size": 8, "lr": 5e-3, "ema_decay": None, "augment": {"prob": 0.0}, "preprocess": _PRE, "threads": 1}
QUICK = {**MATCH, "epochs": 3, "lr": 1e-2}


def _env() -> dict[str, str]:
    """The test's environment for child processes, with this checkout's edgemed first on the path."""
    src = str(Path(edgemed.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def _job(tmp: Path, job: dict[str, Any]) -> Path:
    spec = tmp / f"job-{uuid.uuid4().hex[:8]}.json"
    spec.write_text(json.dumps(job, default=str))
    return spec


def _torchrun(tmp: Path, job: dict[str, Any], nproc: int = 2, env: dict[str, str] | None = None,
              fails: bool = False) -> str:
    """Run the job in `nproc` real processes under torchrun (gloo on this CPU machine); returns their output."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(WORKER), str(_job(tmp, job))]
    done = subprocess.run(cmd, env={**_env(), **(env or {})}, capture_output=True, text=True, timeout=600)
    assert (done.returncode != 0) == fails, f"torchrun exit {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[Path]]:
    return write_phantom_pairs(tmp_path_factory.mktemp("phantoms"), range(3), SMALL)


@pytest.fixture(scope="module")
def one_and_two(phantoms: tuple[list[Path], list[Path]],
                tmp_path_factory: pytest.TempPathFactory) -> tuple[StudentCheckpoint, StudentCheckpoint]:
    scans, segs = phantoms
    tmp = tmp_path_factory.mktemp("ddp")
    one = distill(scans, config_from_dict(MATCH), tmp / "one", teacher_predictions=segs, progress=False)
    _torchrun(tmp, {"action": "distill", "scans": scans, "teacher_predictions": segs, "config": MATCH,
                    "out": tmp / "two"})
    return one, StudentCheckpoint.load(tmp / "two")


def test_two_gloo_processes_reach_the_dice_of_one(one_and_two: tuple[StudentCheckpoint, StudentCheckpoint]) -> None:
    one, two = one_and_two
    d1, d2 = one.metadata["validation"]["dice"]["liver"], two.metadata["validation"]["dice"]["liver"]
    assert d1 > 0.85, "the reference run must have learned the liver for the comparison to mean anything"
    assert abs(d1 - d2) <= 0.01, f"1 process: {d1}, 2 processes: {d2}"
    assert two.metadata["training"]["distributed"] == {"world_size": 2, "backend": "gloo", "per_process_batch": 4}
    assert "distributed" not in one.metadata["training"]


def test_two_processes_write_the_same_checkpoint_structure(
        one_and_two: tuple[StudentCheckpoint, StudentCheckpoint]) -> None:
    one, two = one_and_two
    assert sorted(p.name for p in one.path.iterdir()) == sorted(p.name for p in two.path.iterdir())
    a, b = one.state_dict_numpy(), two.state_dict_numpy()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    assert one.architecture == two.architecture
    h1, h2 = (json.loads((c.path / "history.json").read_text()) for c in (one, two))
    assert [h["epoch"] for h in h1] == [h["epoch"] for h in h2]
    # rank 0 removed the resumable state once the student was written; no stray temporaries
    assert sorted(p.name for p in two.path.parent.iterdir() if p.name.startswith(("two", ".two"))) == ["two"]


@pytest.fixture(scope="module")
def store(phantoms: tuple[list[Path], list[Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    scans, segs = phantoms
    tmp = tmp_path_factory.mktemp("store")
    _torchrun(tmp, {"action": "precompute", "scans": scans, "teacher_predictions": segs,
                    "config": {"organs": ["liver"]}, "out": tmp / "liver"})
    return tmp / "liver"


def test_two_processes_split_the_scans_and_a_rerun_skips_them(store: Path,
                                                             phantoms: tuple[list[Path], list[Path]]) -> None:
    from edgemed.models.teachers import StoredPredictions

    scans, segs = phantoms
    opened = TeacherStore.open(store)
    assert opened.index.last_run == {"computed": 3, "skipped": 0, "processes": 2}
    records = [json.loads((store / "shards" / e.shard.replace(".npz", ".json")).read_text())
               for e in opened.index.shards]
    assert [r["scan"] for r in records] == [s.name for s in scans]
    assert [r["computed_by_rank"] for r in records] == [0, 1, 0]  # scans r, r + 2, … on rank r
    assert all(r["organs"] == [{"label_id": 5, "name": "liver"}] and not r["soft"] for r in records)
    before = {p.name: p.stat().st_mtime_ns for p in (store / "shards").iterdir()}
    again = precompute_teacher(scans, StoredPredictions(zip(scans, segs)), store,
                               TeacherStoreConfig(organs=("liver",)), progress=False)
    assert again.index.last_run == {"computed": 0, "skipped": 3, "processes": 1}
    assert {p.name: p.stat().st_mtime_ns for p in (store / "shards").iterdir()} == before


def test_student_from_the_store_equals_the_student_from_the_predictions(
        store: Path, phantoms: tuple[list[Path], list[Path]], tmp_path: Path) -> None:
    scans, segs = phantoms
    config = config_from_dict(QUICK)
    direct = distill(scans, config, tmp_path / "direct", teacher_predictions=segs, progress=False)
    streamed = distill(scans, config, tmp_path / "streamed", teacher_store=store, progress=False)
    a, b = direct.state_dict_numpy(), streamed.state_dict_numpy()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert streamed.metadata["teacher"]["store"]["shards"] == 3


def test_damaged_shard_is_refused_then_recomputed(store: Path, phantoms: tuple[list[Path], list[Path]],
                                                  tmp_path: Path) -> None:
    from edgemed.models.teachers import StoredPredictions

    scans, segs = phantoms
    copy = tmp_path / "liver"
    shutil.copytree(store, copy)
    shard = copy / "shards" / TeacherStore.open(copy).index.shards[1].shard
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="damaged"):
        distill(scans, config_from_dict(QUICK), tmp_path / "s", teacher_store=copy, progress=False)
    with pytest.warns(EdgemedWarning, match="recomputing"):
        fixed = precompute_teacher(scans, StoredPredictions(zip(scans, segs)), copy,
                                   TeacherStoreConfig(organs=("liver",)), progress=False)
    assert fixed.index.last_run == {"computed": 1, "skipped": 2, "processes": 1}
    assert distill(scans, config_from_dict(QUICK), tmp_path / "s", teacher_store=copy, progress=False).path.is_dir()


def test_store_refuses_other_organs_and_another_teacher(store: Path, phantoms: tuple[list[Path], list[Path]],
                                                        tmp_path: Path) -> None:
    from edgemed.models.teachers import StoredPredictions

    scans, segs = phantoms
    with pytest.raises(ConfigError, match="holds the teacher's outputs for liver"):
        distill(scans, config_from_dict({**QUICK, "organs": ["spleen"]}), tmp_path / "s", teacher_store=store,
                progress=False)
    with pytest.raises(ConfigError, match="filled with other organs"):
        precompute_teacher(scans, StoredPredictions(zip(scans, segs)), store, TeacherStoreConfig(organs=("spleen",)),
                           progress=False)
    with pytest.raises(InputError, match="not a teacher store"):
        TeacherStore.open(tmp_path)


def test_more_processes_than_scans_is_fine_and_said(phantoms: tuple[list[Path], list[Path]], tmp_path: Path) -> None:
    scans, segs = phantoms
    log = _torchrun(tmp_path, {"action": "precompute", "scans": scans[:1], "teacher_predictions": segs[:1],
                               "config": {"organs": ["liver"]}, "out": tmp_path / "one"})
    assert "2 processes for 1 scan(s)" in log
    assert TeacherStore.open(tmp_path / "one").index.last_run == {"computed": 1, "skipped": 0, "processes": 2}


def test_a_batch_smaller_than_the_processes_is_refused(phantoms: tuple[list[Path], list[Path]],
                                                        tmp_path: Path) -> None:
    scans, segs = phantoms
    log = _torchrun(tmp_path, {"action": "distill", "scans": scans, "teacher_predictions": segs,
                               "config": {**QUICK, "batch_size": 1}, "out": tmp_path / "s"}, fails=True)
    assert "raise --batch-size to >= 2" in log
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("dtype,atol", [("float16", 1e-3), ("uint8", 1 / 255)])
def test_probability_shards_keep_the_soft_targets(phantoms: tuple[list[Path], list[Path]], tmp_path: Path,
                                                  dtype: str, atol: float) -> None:
    from edgemed.io import read_volume
    from edgemed.models.teachers import StoredPredictions, load_stored_prediction

    scans, segs = phantoms
    volume = read_volume(scans[0])
    labels = load_stored_prediction(segs[0], like=volume).mask([5])
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, (2, *labels.shape)).astype(np.float32)
    logits[1] += 4.0 * (labels == 1) - 2.0
    np.savez_compressed(tmp_path / "p0.npz", logits=logits, class_ids=np.array([0, 5]))
    teacher = StoredPredictions([(scans[0], tmp_path / "p0.npz")])
    st = precompute_teacher(scans[:1], teacher, tmp_path / "store", TeacherStoreConfig(organs=("liver",), dtype=dtype),
                            progress=False)
    probs, mask, soft = st.read(scans[0], volume)
    expected = teacher.predict(volume).probabilities([5], temperature=2.0)
    assert soft and probs.dtype == np.float32
    np.testing.assert_allclose(probs, expected, atol=atol)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    assert np.array_equal(mask, teacher.predict(volume).mask([5]))
    with pytest.raises(ConfigError, match="temperature 2.0"):
        st.check_matches([5], "totalsegmentator", 3.0)


def _state_epoch(path: Path) -> tuple[int, int]:
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError):  # absent, or being replaced this instant
        return -1, -1
    return state["member"], state["epoch"]


def test_killed_run_resumes_to_the_same_weights(phantoms: tuple[list[Path], list[Path]], tmp_path: Path) -> None:
    """A real interruption (SIGKILL mid-training), then resume: the weights of an uninterrupted run."""
    scans, segs = phantoms
    # Default augmentation and EMA on, two ensemble members: every random stream and state is exercised.
    recipe = {**QUICK, "epochs": 4, "ensemble": 2, "ema_decay": 0.99, "augment": {"scale": [0.9, 1.1]}}
    config = config_from_dict(recipe)
    out = tmp_path / "student"
    proc = subprocess.Popen([sys.executable, str(WORKER), str(_job(tmp_path, {
        "action": "distill", "scans": scans, "teacher_predictions": segs, "config": recipe, "out": out}))],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while _state_epoch(tmp_path / "student.resume") < (1, 1):  # the second member is under way
        assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.stderr.read()[-2000:]!r}"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert not out.exists()
    member, epoch = _state_epoch(tmp_path / "student.resume")
    with pytest.raises(ConfigError, match="recipe"):
        distill(scans, config_from_dict({**recipe, "lr": 2e-2}), out, teacher_predictions=segs, progress=False,
                resume=True)
    resumed = distill(scans, config, out, teacher_predictions=segs, progress=False, resume=True)
    assert resumed.metadata["training"]["resumed"] == {"member": member, "epoch": epoch}
    assert not (tmp_path / "student.resume").exists()
    straight = distill(scans, config, tmp_path / "straight", teacher_predictions=segs, progress=False)
    a, b = straight.state_dict_numpy(), resumed.state_dict_numpy()
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert (straight.path / "history.json").read_text() == (resumed.path / "history.json").read_text()


def test_nccl_without_cuda_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from edgemed.compress import distributed

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the nccl path is tested by test_nccl_on_gpus")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="nccl backend needs CUDA"):
        with distributed(backend="nccl"):
            pass
    with pytest.raises(ConfigError, match="unknown"):
        with distributed(backend="mpi-please"):
            pass


def test_no_torchrun_means_no_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    from edgemed.compress import distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed() as ctx:
        assert (ctx.rank, ctx.world_size, ctx.backend, ctx.device) == (0, 1, None, "cpu")
        assert not dist.is_initialized()
        assert ctx.all_reduce_sum(np.array([3])).tolist() == [3]


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA GPUs for nccl")
def test_nccl_on_gpus(phantoms: tuple[list[Path], list[Path]], tmp_path: Path) -> None:
    import torch

    scans, segs = phantoms
    nproc = min(2, torch.cuda.device_count())
    _torchrun(tmp_path, {"action": "distill", "scans": scans, "teacher_predictions": segs, "config": QUICK,
                         "out": tmp_path / "gpu"}, nproc=nproc, env={"EDGEMED_DIST_BACKEND": "nccl"})
    ckpt = StudentCheckpoint.load(tmp_path / "gpu")
    assert ckpt.metadata["training"]["distributed"]["backend"] == "nccl"
    assert ckpt.metadata["validation"]["dice"]["liver"] > 0.2


def test_qat_fine_tunes_in_two_gloo_processes(tmp_path: Path) -> None:
    """QAT under torchrun: DDP fine-tuning, rank 0 measures and writes; both processes return its result."""
    pytest.importorskip("nncf")
    from _phantom_pairs import tiny_liver_bundle

    from edgemed.runtime import OnnxBundle

    bundle, scan, _ = tiny_liver_bundle(tmp_path)
    _torchrun(tmp_path, {"action": "qat", "bundle": bundle, "student": tmp_path / "student", "scans": [scan],
                         "config": {"calibration_slices": 16, "epochs": 1, "batch_size": 4}, "out": tmp_path / "q"})
    record = OnnxBundle.load(tmp_path / "q").metadata["quantization"]
    assert record["calibration"]["method"] == "NncfQatConfig"
    assert record["chosen_precision"] in ("int8", "fp32") and record["dice"]
