"""No identifier on any path (issue 18, item 6), error paths included.

A real CT series (dcmqi, 3 slices made 5) has every PS3.15 Basic Profile attribute that holds text,
a date, a time or a UID rewritten to a sentinel, and sits in a folder named after the patient with
files named by their SOP instance UIDs. Every error path reachable from the library and the CLI is
driven; no sentinel may appear in a message, a warning, the traceback chain, a log record, stdout,
stderr or any non-DICOM file written. A DICOM-SEG is the one exception: it belongs to the study.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from _hostile import SENTINEL_UID, assert_no_sentinel, assert_tree_clean

from edgemed.errors import EdgemedError, InputError
from edgemed.io import read_volume
from edgemed.runtime import OnnxBundle


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


def _rewrite(folder: Path, change: Callable[[pydicom.Dataset], None], *, only: int | None = None) -> None:
    for i, path in enumerate(_files(folder)):
        if only is None or i == only:
            ds = pydicom.dcmread(path)
            change(ds)
            ds.save_as(path)


def _chain(err: BaseException | None) -> str:
    """The text of an exception and every cause and context behind it (what a traceback prints of them)."""
    seen, parts = set(), []
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        parts.append(f"{type(err).__name__}: {err}")
        err = err.__cause__ or err.__context__
    return "\n".join(parts)


def _read_fails(folder: Path) -> str:
    """Read `folder`; return everything a user could see: message, full traceback chain, warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InputError) as info:
            read_volume(folder)
    text = _chain(info.value)
    return text + "\n".join(str(w.message) for w in caught)


def _cli_fails(run_cli, args: list[str], code: int = 1) -> str:  # type: ignore[no-untyped-def]
    res = run_cli(args)
    assert res.returncode == code, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("error: ") and res.stderr.count("error: ") == 1, res.stderr
    assert_no_sentinel(res.stdout, res.stderr, where=f"`edgemed {args[0]}` output")
    return res.stderr


def _bad_birth_date(ds: pydicom.Dataset) -> None:
    ds["PatientBirthDate"].value = "SENTINEL-1901"  # not a DA: pydicom cannot convert it


def test_clean_series_reads_without_identifiers(sentinel_series: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = read_volume(sentinel_series)
    assert volume.shape[2] == 5
    assert_no_sentinel(volume.source, repr(volume.meta), *(str(w.message) for w in caught))


def test_mixed_series_message_names_no_description_or_uid(sentinel_series: Path) -> None:
    other = pydicom.dcmread(_files(sentinel_series)[0])
    other.SeriesInstanceUID, other.SOPInstanceUID = f"{SENTINEL_UID}.77", f"{SENTINEL_UID}.78"
    other.SeriesDescription = "SENTINEL OTHER SERIES"
    other.save_as(sentinel_series / "other.dcm")
    text = _read_fails(sentinel_series)
    assert "2 DICOM series" in text
    assert_no_sentinel(text, where="the mixed-series error")


def test_malformed_value_is_read_quietly(sentinel_series: Path, caplog: pytest.LogCaptureFixture) -> None:
    _rewrite(sentinel_series, _bad_birth_date)
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = read_volume(sentinel_series)
    assert_no_sentinel(volume.source, repr(volume.meta), *(str(w.message) for w in caught), caplog.text,
                       where="warnings or logs")


def test_missing_slice(sentinel_series: Path) -> None:
    _files(sentinel_series)[2].unlink()
    text = _read_fails(sentinel_series)
    assert "missing" in text
    assert_no_sentinel(text)


def test_unreadable_pixel_data(sentinel_series: Path) -> None:
    _rewrite(sentinel_series, lambda ds: setattr(ds, "PixelData", ds.PixelData[:100]), only=1)
    text = _read_fails(sentinel_series)
    assert "could not decode the pixel data" in text
    assert_no_sentinel(text)


def test_truncated_file(sentinel_series: Path) -> None:
    victim = _files(sentinel_series)[1]
    victim.write_bytes(victim.read_bytes()[:700])  # cut inside the patient module
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            read_volume(sentinel_series)
            text = ""
        except EdgemedError as err:
            text = _chain(err)
    assert_no_sentinel(text, *(str(w.message) for w in caught))


def test_file_without_pixel_data(sentinel_series: Path) -> None:
    _rewrite(sentinel_series, lambda ds: delattr(ds, "PixelData"), only=3)
    text = _read_fails(sentinel_series)
    assert "without pixel data" in text
    assert_no_sentinel(text)


def test_cli_segment_with_dicom_seg_keeps_identifiers_in_the_seg_only(
        phantom_bundle: OnnxBundle, sentinel_series: Path, tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    out, seg = tmp_path / "out" / "mask.nii.gz", tmp_path / "out" / "mask_seg.dcm"
    res = run_cli(["segment", str(phantom_bundle.path), str(sentinel_series), "--out", str(out), "--dicom-seg", str(seg)])
    assert res.returncode == 0, res.stderr
    assert f"wrote {out}" in res.stdout and f"wrote {seg}" in res.stdout  # every file written is listed
    assert_no_sentinel(res.stdout, res.stderr)
    assert_tree_clean(tmp_path / "out", allow=(seg,))
    assert pydicom.dcmread(seg).PatientName == "SENTINEL^PN^1234"  # the SEG belongs to the study


def test_cli_segment_malformed_value_with_dicom_seg_writes_nothing(
        phantom_bundle: OnnxBundle, sentinel_series: Path, tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    _rewrite(sentinel_series, _bad_birth_date)
    out, seg = tmp_path / "mask.nii.gz", tmp_path / "mask_seg.dcm"
    err = _cli_fails(run_cli, ["segment", str(phantom_bundle.path), str(sentinel_series), "--out", str(out),
                               "--dicom-seg", str(seg)])
    assert "DICOM-SEG" in err and "malformed" in err
    assert not seg.exists() and not out.exists(), "both outputs or neither"


def test_cli_segment_dicom_seg_to_a_bad_path(phantom_bundle: OnnxBundle, sentinel_series: Path, tmp_path: Path,
                                             run_cli) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a_file").write_text("x")
    res = run_cli(["segment", str(phantom_bundle.path), str(sentinel_series), "--out", str(tmp_path / "m.nii.gz"),
                   "--dicom-seg", str(tmp_path / "a_file" / "seg.dcm")])
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert_no_sentinel(res.stdout, res.stderr)
    assert_tree_clean(tmp_path)


def test_cli_segment_wrong_modality(phantom_bundle: OnnxBundle, sentinel_series: Path, tmp_path: Path,
                                    run_cli) -> None:  # type: ignore[no-untyped-def]
    _rewrite(sentinel_series, lambda ds: setattr(ds, "Modality", "MR"))
    err = _cli_fails(run_cli, ["segment", str(phantom_bundle.path), str(sentinel_series), "--out",
                               str(tmp_path / "m.nii.gz")])
    assert "'MR'" in err and "CT" in err


def test_cli_segment_mixed_and_missing(phantom_bundle: OnnxBundle, sentinel_series: Path, tmp_path: Path,
                                       run_cli) -> None:  # type: ignore[no-untyped-def]
    _files(sentinel_series)[2].unlink()
    err = _cli_fails(run_cli, ["segment", str(phantom_bundle.path), str(sentinel_series), "--out",
                               str(tmp_path / "m.nii.gz")])
    assert "missing" in err
    other = pydicom.dcmread(_files(sentinel_series)[0])
    other.SeriesInstanceUID, other.SOPInstanceUID = f"{SENTINEL_UID}.77", f"{SENTINEL_UID}.78"
    other.save_as(sentinel_series / "other.dcm")
    _cli_fails(run_cli, ["segment", str(phantom_bundle.path), str(sentinel_series), "--out", str(tmp_path / "m.nii.gz")])


def test_cli_series_given_where_an_artifact_belongs(sentinel_series: Path, tmp_path: Path,
                                                    run_cli) -> None:  # type: ignore[no-untyped-def]
    first = _files(sentinel_series)[0]
    for args in (["inspect", str(sentinel_series)], ["inspect", str(first)], ["verify", str(sentinel_series)],
                 ["segment", str(sentinel_series), str(sentinel_series), "--out", str(tmp_path / "m.nii.gz")]):
        res = run_cli(args)
        assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
        assert_no_sentinel(res.stdout, res.stderr, where=" ".join(args[:1]))


def test_cli_profile_with_series_as_scan_and_seg_as_reference(
        phantom_bundle: OnnxBundle, sentinel_series: Path, tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    work = tmp_path / "work"
    work.mkdir()
    seg = work / "ref_seg.dcm"
    res = run_cli(["segment", str(phantom_bundle.path), str(sentinel_series), "--out", str(work / "m.nii.gz"),
                   "--dicom-seg", str(seg)])
    assert res.returncode == 0, res.stderr
    res = run_cli(["profile", str(phantom_bundle.path), "--scan", str(sentinel_series), "--ground-truth", str(seg),
                   "--repeats", "1", "--warmup", "0", "--backend", "ort", "--out", str(work / "report")])
    assert res.returncode == 0, res.stderr
    assert_no_sentinel(res.stdout, res.stderr)
    assert_tree_clean(work, allow=(seg,))
