"""Hostile scans: limits checked before allocation, NaN/Inf, label maps and constant volumes passed as
scans, the CLI's --modality, tiny and thick-sliced volumes, and the streamed loop equal to the old one."""

from __future__ import annotations

import math
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from _phantom_pairs import tiny_liver_bundle

from edgemed import runtime
from edgemed.artifacts import PreprocessSpec
from edgemed.errors import InputError
from edgemed.io import (Volume, from_student_grid, normalize_mr, prepare_volume, read_labels, read_volume,
                        student_grid_geometry, to_student_grid, window_hu, write_nifti)
from edgemed.phantom import PhantomConfig, make_phantom
from edgemed.runtime import infer_slices, infer_volume
from edgemed.runtime._postprocess import label_map_from_probabilities

SPEC = PreprocessSpec(spacing_mm=(8.0, 8.0), context_slices=1, pad_multiple=4)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_liver_bundle(tmp_path_factory.mktemp("limits"))[0]


@pytest.fixture(scope="module")
def seg(bundle: Path):  # type: ignore[no-untyped-def]
    with runtime.load(bundle, backend="ort", threads=1) as s:
        yield s


def _ct(shape: tuple[int, int, int] = (48, 40, 24), spacing: tuple[float, float, float] = (8.0, 8.0, 10.0),
        seed: int = 5) -> Volume:
    return make_phantom(seed, PhantomConfig(shape=shape, spacing_mm=spacing))[0]


def _with_spacing(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Volume:
    """A small CT-like array (air and tissue, not constant) under a header claiming `spacing`."""
    array = np.full(shape, -1000.0, dtype=np.float32)
    array[shape[0] // 4: 3 * shape[0] // 4, shape[1] // 4: 3 * shape[1] // 4] = 40.0
    return Volume(array, np.diag([*spacing, 1.0]), "CT", "hostile.nii.gz")


def _refused_fast(fn, match: str) -> str:  # type: ignore[no-untyped-def]
    """Run `fn`, expecting an InputError matching `match` within 1 s and under 2 MB of numpy allocations."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(InputError, match=match) as err:
            fn()
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < 1.0, f"refusal took {seconds:.2f} s"
    assert peak < 2 * 2**20, f"{peak / 2**20:.1f} MB allocated before refusing"
    message = str(err.value)
    assert "\n" not in message
    return message


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgemed", "segment", *args], capture_output=True, text=True,
                          timeout=300)


def _one_line_error(res: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


# -- limits, checked from the header before any array is made ------------------------------------------------------

@pytest.mark.parametrize("spacing, match", [
    ((1000.0, 1000.0, 3.0), r"\(1000, 1000, 3\) mm is outside the plausible 0.05-50 mm"),
    ((0.001, 0.8, 0.8), r"\(0.001, 0.8, 0.8\) mm is outside"),
    ((0.8, 0.8, 0.0), "not positive and finite"),
    ((0.8, math.nan, 0.8), "not positive and finite"),
    ((0.8, 0.8, 60.0), r"\(0.8, 0.8, 60\) mm is outside"),  # a 6 cm "slice thickness"
])
def test_absurd_spacing_is_refused_before_allocation(spacing: tuple[float, float, float], match: str) -> None:
    volume = _with_spacing((64, 64, 8), spacing)
    message = _refused_fast(lambda: prepare_volume(volume, SPEC), match)
    assert message.startswith("hostile.nii.gz: ") and "header" in message


def test_absurd_extent_is_refused_before_allocation() -> None:
    volume = _with_spacing((80, 64, 8), (45.0, 1.0, 1.0))  # each spacing plausible, 3.6 m wide
    message = _refused_fast(lambda: student_grid_geometry(volume, SPEC), r"spans 3600 x 64 x 8 mm")
    assert "3000 mm" in message


def test_student_grid_voxel_count_is_refused_before_allocation() -> None:
    # 2.5 m at 0.06 mm would be 42 667 x 42 667 pixels a slice: terabytes, refused from the header.
    volume = _with_spacing((64, 64, 4), (40.0, 40.0, 2.0))
    fine = PreprocessSpec(spacing_mm=(0.06, 0.06), context_slices=1, pad_multiple=4)
    message = _refused_fast(lambda: prepare_volume(volume, fine), r"42667 x 42667 x 4 = 7.28e\+09 voxels")
    assert "EDGEMED_MAX_STUDENT_VOXELS" in message and "crop the scan" in message


def test_segment_refuses_absurd_spacing_before_allocation(seg) -> None:  # type: ignore[no-untyped-def]
    volume = _with_spacing((64, 64, 8), (1000.0, 1000.0, 3.0))
    _refused_fast(lambda: seg.segment(volume), "outside the plausible")


def test_cli_absurd_spacing_nifti_fails_in_one_line_with_little_memory(bundle: Path, tmp_path: Path) -> None:
    # The case: a NIfTI whose pixdim claims 2 m voxels made segment allocate gigabytes and die.
    scan = write_nifti(_with_spacing((128, 128, 40), (2000.0, 2000.0, 3.0)), tmp_path / "broken.nii.gz")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    res = _cli(str(bundle), str(scan), "--out", str(tmp_path / "mask.nii.gz"))
    line = _one_line_error(res)
    assert "(2000, 2000, 3) mm is outside the plausible 0.05-50 mm" in line
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert peak_mb < 1024 or before / 1024 >= 1024, f"the child peaked at {peak_mb:.0f} MB"
    assert not (tmp_path / "mask.nii.gz").exists()


# -- what the voxels are --------------------------------------------------------------------------------------------

def test_nan_voxels_get_their_own_message_not_a_modality_guess(seg, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ct = _ct()
    array = ct.array.copy()
    array[3, 4, 5] = array[10, 11, 12] = array[20, 21, 3] = np.nan
    path = write_nifti(ct.with_array(array), tmp_path / "nan_ct.nii.gz")
    volume = read_volume(path)
    assert volume.modality == "CT"  # NaN voxels no longer turn the guess into "MR"
    with pytest.raises(InputError, match=r"nan_ct.nii.gz: 3 voxels are NaN or infinite \(of 46,080\)") as err:
        seg.segment(volume)
    assert "MR" not in str(err.value) and "modality" not in str(err.value)


def test_inf_voxels_are_counted(seg) -> None:  # type: ignore[no-untyped-def]
    ct = _ct()
    array = ct.array.copy()
    array[0, 0, :7] = np.inf
    array[1, 1, 0] = -np.inf
    with pytest.raises(InputError, match=r"8 voxels are NaN or infinite \(of 46,080\)"):
        seg.segment(ct.with_array(array))


def test_label_map_passed_as_scan_is_named(seg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, labels = make_phantom(5, PhantomConfig(shape=(48, 40, 24), spacing_mm=(8.0, 8.0, 10.0)))
    path = write_nifti(labels.with_array(labels.array.astype(np.float32), modality="CT"), tmp_path / "seg.nii.gz")
    volume = read_volume(path)
    n = len(np.unique(labels.array))
    with pytest.raises(InputError, match=rf"looks like a label map, not a scan: its voxels are {n} distinct integers "
                                         r"\(0, [0-9, ]+\)\. Pass the CT/MR image"):
        seg.segment(volume)


def test_constant_volume_is_named(seg) -> None:  # type: ignore[no-untyped-def]
    flat = _ct().with_array(np.full((48, 40, 24), -1000.0, dtype=np.float32))
    with pytest.raises(InputError, match=r"every voxel is -1000, a constant volume"):
        seg.segment(flat)


def test_cli_label_map_and_nan_scan_fail_in_one_line(bundle: Path, tmp_path: Path) -> None:
    _, labels = make_phantom(5, PhantomConfig(shape=(48, 40, 24), spacing_mm=(8.0, 8.0, 10.0)))
    lab = write_nifti(labels.with_array(labels.array.astype(np.float32), modality="CT"), tmp_path / "seg.nii.gz")
    line = _one_line_error(_cli(str(bundle), str(lab), "--out", str(tmp_path / "a.nii.gz")))
    assert "looks like a label map" in line and "--modality" not in line
    ct = _ct()
    array = ct.array.copy()
    array[5, 5, 5] = np.nan
    nan = write_nifti(ct.with_array(array), tmp_path / "nan.nii.gz")
    line = _one_line_error(_cli(str(bundle), str(nan), "--out", str(tmp_path / "b.nii.gz")))
    assert "1 voxels are NaN or infinite (of 46,080)" in line and "MR" not in line


def test_cli_modality_override(bundle: Path, tmp_path: Path) -> None:
    # A CT with no air below -500 HU (a tight crop inside the body) is guessed to be MR.
    ct = _ct()
    scan = write_nifti(ct.with_array(np.maximum(ct.array, -400.0)), tmp_path / "crop.nii.gz")
    assert read_volume(scan).modality == "MR"
    out = tmp_path / "mask.nii.gz"
    line = _one_line_error(_cli(str(bundle), str(scan), "--out", str(out)))
    assert "is 'MR' (guessed from its intensities), but this model segments CT scans" in line
    assert line.endswith("say so: --modality CT.") and "read_volume(" not in line  # the CLI flag, not Python
    res = _cli(str(bundle), str(scan), "--out", str(out), "--modality", "CT", "--json")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and out.exists()
    assert read_labels(out).shape == ct.shape
    bad = _cli(str(bundle), str(scan), "--out", str(out), "--modality", "PET")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "'PET' is not one of 'CT', 'MR'" in bad.stderr


def test_python_modality_message_names_the_python_argument(seg) -> None:  # type: ignore[no-untyped-def]
    ct = _ct()
    mr = Volume(np.maximum(ct.array, -400.0), ct.affine, "MR", "crop.nii.gz", {"modality_guessed": True})
    with pytest.raises(InputError, match=r"read_volume\(path, modality='CT'\)"):
        seg.segment(mr)


# -- tiny and thick volumes -----------------------------------------------------------------------------------------

def test_one_slice_volume(seg) -> None:  # type: ignore[no-untyped-def]
    ct = _ct(shape=(48, 40, 1))
    mask = seg.segment(ct)
    assert mask.shape == (48, 40, 1) and mask.array.dtype == np.uint8
    assert seg.last_timings.slices == 1 and seg.last_timings.batches == 1
    np.testing.assert_array_equal(mask.array, label_map_from_probabilities(seg.predict(ct), seg.organs))


def test_huge_slice_thickness_within_range_segments(seg) -> None:  # type: ignore[no-untyped-def]
    ct = _ct(shape=(48, 40, 6), spacing=(8.0, 8.0, 45.0))  # 4.5 cm slices: plausible, and still a scan
    mask = seg.segment(ct)
    assert mask.shape == (48, 40, 6)
    np.testing.assert_array_equal(mask.array, label_map_from_probabilities(seg.predict(ct), seg.organs))


# -- streaming: the same masks, bounded memory ----------------------------------------------------------------------

@pytest.mark.parametrize("shape, spacing", [((48, 40, 24), (8.0, 8.0, 10.0)),   # the student's grid: no resampling
                                            ((90, 70, 33), (4.1, 4.6, 7.0)),   # finer: resampled both ways
                                            ((30, 26, 19), (13.0, 12.0, 9.0))])  # coarser
def test_streamed_masks_equal_whole_volume_masks(seg, shape, spacing) -> None:  # type: ignore[no-untyped-def]
    ct = _ct(shape=shape, spacing=spacing, seed=31)
    streamed = seg.segment(ct, batch_size=4).array
    whole = label_map_from_probabilities(seg.predict(ct, batch_size=4), seg.organs)
    np.testing.assert_array_equal(streamed, whole)
    assert 0 < int((streamed == 5).sum()) < streamed.size  # liver found, not everywhere: not vacuous


def test_slabs_equal_one_whole_volume_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgemed.runtime import _infer

    rng = np.random.default_rng(0)
    weights = rng.normal(size=(3, 3)).astype(np.float32)

    def model(x: np.ndarray) -> np.ndarray:
        return np.einsum("kc,nchw->nkhw", weights, x).astype(np.float32)

    ct = _ct(shape=(70, 60, 23), spacing=(5.0, 5.5, 9.0), seed=8)
    image, geom = prepare_volume(ct, SPEC)
    whole = from_student_grid(infer_slices(model, image, np.arange(image.shape[0]), context=1, step=geom.context_step),
                              geom)
    monkeypatch.setattr(_infer, "_SLAB_VALUES", 1)  # one batch of 2 slices per slab: 12 slabs
    np.testing.assert_array_equal(infer_volume(model, ct, SPEC, batch_size=2), whole)
    lut = np.array([0, 5, 7], dtype=np.uint8)
    np.testing.assert_array_equal(infer_volume(model, ct, SPEC, batch_size=2, lut=lut), lut[whole.argmax(0)])


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_chunked_preparation_equals_the_whole_volume_one(modality: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgemed.io import _student_grid

    ct = _ct(shape=(70, 60, 23), spacing=(5.0, 5.5, 9.0), seed=9)
    spec = PreprocessSpec(spacing_mm=(8.0, 8.0), context_slices=1, pad_multiple=4, modality=modality)
    volume = Volume(ct.array + (1000.0 if modality == "MR" else 0.0), ct.affine, modality, "v")
    geom = student_grid_geometry(volume, spec)
    scaled = window_hu(volume.array, spec.window_hu) if modality == "CT" else normalize_mr(volume.array)
    monkeypatch.setattr(_student_grid, "_CHUNK_VOXELS", 1)  # one slice per chunk
    image, got = prepare_volume(volume, spec)
    assert got == geom
    np.testing.assert_array_equal(image, to_student_grid(scaled, geom, order="linear"))


def test_streamed_segment_allocates_far_less_than_the_probabilities(seg) -> None:  # type: ignore[no-untyped-def]
    ct = _ct(shape=(384, 352, 120), spacing=(1.0, 1.1, 2.0), seed=4)  # 16 M voxels, 62 MB of float32
    seg.segment(ct)  # warm up
    tracemalloc.start()
    try:
        seg.segment(ct)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    scan_mb, peak_mb = ct.array.nbytes / 2**20, peak / 2**20
    # The old loop held (K, X, Y, Z) float32 probabilities twice over (2 classes: 2x the scan each) plus its
    # argmax; the streamed one holds the uint8 mask (1/4 of the scan) and one slab.
    assert peak_mb < 0.6 * scan_mb, f"segment allocated {peak_mb:.1f} MB for a {scan_mb:.1f} MB scan"
