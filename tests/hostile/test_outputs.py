"""Hostile outputs: every writer follows one rule (edgemed.artifacts.check_output) and fails in one line.

A missing --out is created; an artifact of the same kind is replaced only with --overwrite; anything
else there (a user's folder, a file, another kind, the working directory, a folder holding the
inputs) is refused and left untouched. OS failures (full or read-only disk, too-long names, a
folder where a file goes) print one "error: PATH: CAUSE — WHAT TO DO" line, never a traceback.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _phantom_pairs import tiny_liver_bundle
from edgemed._atomic import describe_os_error
from edgemed.artifacts import atomic_file, atomic_files, extract_artifact, output_kind, pack_artifact
from edgemed.errors import OutputError

RELEASE = Path(__file__).resolve().parents[1] / "assets" / "release-0.1.0"


# ---------------------------------------------------------------------------------------------- helpers

def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `edgemed ARGS` in-process through main() (its error handling included); (exit code, stdout, stderr).
    An exception main() does not turn into a message escapes and fails the test (a traceback)."""
    from edgemed.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def _run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m edgemed ARGS` in a subprocess: a real traceback would show in its stderr."""
    return subprocess.run([sys.executable, "-m", "edgemed", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def _one_line_error(code: int, err: str, *needles: str) -> str:
    assert code == 1, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)
    return lines[0]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _user_folder(root: Path) -> Path:
    folder = root / "mine"
    folder.mkdir()
    (folder / "thesis.docx").write_bytes(b"four years of work")
    return folder


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """The 0.1.0 student and bundles, copied (tiny: a few kB each)."""
    root = tmp_path / "release"
    shutil.copytree(RELEASE, root)
    return root


@pytest.fixture
def archives(release: Path, tmp_path: Path) -> dict[str, Path]:
    out = tmp_path / "archives"
    return {name: pack_artifact(release / name, out / f"{name}.tar")
            for name in ("liver.edgemed", "liver-int8.edgemed", "student")}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(bundle, scan, label map): a tiny phantom liver bundle, a few seconds to make."""
    return tiny_liver_bundle(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def tmpfs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real 1 MiB tmpfs mounted under tmp_path (root can write through chmod, not through a mount)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip()}); needs root with CAP_SYS_ADMIN")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _read_only(mnt: Path) -> None:
    res = subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot remount read-only ({res.stderr.strip()})")


# ------------------------------------------------------------------------- folders that are not artifacts

def test_export_refuses_a_users_folder_and_keeps_its_files(release: Path, tmp_path: Path) -> None:
    mine = _user_folder(tmp_path)
    res = _run(["export", release / "student", "--out", mine])
    _one_line_error(res.returncode, res.stderr, str(mine), "not an edgemed artifact", "choose another --out")
    assert (mine / "thesis.docx").read_bytes() == b"four years of work"
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.docx"]


def test_unpack_refuses_a_users_folder_and_keeps_its_files(archives: dict[str, Path], tmp_path: Path) -> None:
    mine = _user_folder(tmp_path)
    res = _run(["unpack", archives["liver.edgemed"], "--out", mine])
    _one_line_error(res.returncode, res.stderr, str(mine), "not an edgemed artifact")
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.docx"]


def test_distill_refuses_a_users_folder_before_training(tiny: tuple[Path, Path, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    _, scan, seg = tiny
    mine = _user_folder(tmp_path)
    code, _, err = _cli(["distill", "--scans", scan, "--teacher-predictions", seg, "--organ", "liver",
                         "--out", mine, "--quiet"], capsys)
    _one_line_error(code, err, str(mine), "not an edgemed artifact")
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.docx"]
    assert not list(tmp_path.glob("mine.resume"))


def test_segment_refuses_a_folder_as_mask(tiny: tuple[Path, Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bundle, scan, _ = tiny
    mine = _user_folder(tmp_path)
    code, _, err = _cli(["segment", bundle, scan, "--out", mine], capsys)
    _one_line_error(code, err, str(mine), "is a folder where a file goes")
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.docx"]


def test_profile_refuses_a_users_folder(tiny: tuple[Path, Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    bundle, scan, _ = tiny
    mine = _user_folder(tmp_path)
    code, _, err = _cli(["profile", bundle, "--scan", scan, "--out", mine, "--repeats", "1", "--warmup", "0"], capsys)
    _one_line_error(code, err, str(mine), "not an edgemed artifact")
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.docx"]


# --------------------------------------------------------------------- files, other kinds, the inputs

def test_export_refuses_a_regular_file_as_out(release: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    code, _, err = _cli(["export", release / "student", "--out", notes], capsys)
    _one_line_error(code, err, str(notes), "is a file")
    assert notes.read_text() == "keep me"


def test_unpack_refuses_a_regular_file_as_out(archives: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    code, _, err = _cli(["unpack", archives["liver.edgemed"], "--out", notes], capsys)
    _one_line_error(code, err, str(notes), "is a file")
    assert notes.read_text() == "keep me"


def test_export_refuses_an_artifact_of_another_kind_even_with_overwrite(release: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other_student"
    shutil.copytree(release / "student", other)
    before = _snapshot(other)
    code, _, err = _cli(["export", release / "student", "--out", other, "--overwrite"], capsys)
    _one_line_error(code, err, str(other), "holds a student artifact, not a bundle")
    assert _snapshot(other) == before


def test_unpack_refuses_a_student_archive_onto_a_bundle(archives: dict[str, Path], release: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    dest = release / "liver.edgemed"
    before = _snapshot(dest)
    code, _, err = _cli(["unpack", archives["student"], "--out", dest, "--overwrite"], capsys)
    _one_line_error(code, err, str(dest), "bundle", "student")
    assert _snapshot(dest) == before


def test_same_kind_is_refused_without_overwrite_and_replaced_with_it(archives: dict[str, Path], release: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    dest = release / "liver.edgemed"
    before = _snapshot(dest)
    code, _, err = _cli(["unpack", archives["liver-int8.edgemed"], "--out", dest], capsys)
    _one_line_error(code, err, str(dest), "already holds a bundle artifact", "--overwrite")
    assert _snapshot(dest) == before
    code, out, err = _cli(["unpack", archives["liver-int8.edgemed"], "--out", dest, "--overwrite"], capsys)
    assert code == 0, err
    assert _snapshot(dest) == _snapshot(release / "liver-int8.edgemed")
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_segment_mask_same_file_needs_overwrite(tiny: tuple[Path, Path, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    bundle, scan, _ = tiny
    mask = tmp_path / "mask.nii.gz"
    mask.write_bytes(b"an earlier mask")
    code, _, err = _cli(["segment", bundle, scan, "--out", mask], capsys)
    _one_line_error(code, err, str(mask), "already exists", "--overwrite")
    assert mask.read_bytes() == b"an earlier mask"
    code, _, err = _cli(["segment", bundle, scan, "--out", mask, "--overwrite"], capsys)
    assert code == 0, err
    assert mask.read_bytes()[:2] == b"\x1f\x8b"  # a gzip NIfTI now


def test_out_dot_is_refused(archives: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    work = _user_folder(tmp_path)
    monkeypatch.chdir(work)
    code, _, err = _cli(["unpack", archives["liver.edgemed"], "--out", "."], capsys)
    _one_line_error(code, err, "working directory")
    assert sorted(p.name for p in work.iterdir()) == ["thesis.docx"]


def test_out_dot_is_refused_end_to_end(release: Path, tmp_path: Path) -> None:
    work = _user_folder(tmp_path)
    res = _run(["export", release / "student", "--out", "."], cwd=work)
    _one_line_error(res.returncode, res.stderr, "working directory")
    assert sorted(p.name for p in work.iterdir()) == ["thesis.docx"]


def test_a_folder_holding_the_inputs_is_refused(tiny: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    bundle, scan, seg = tiny
    root = scan.parent
    before = sorted(p.name for p in root.iterdir())
    code, _, err = _cli(["distill", "--scans", scan, "--teacher-predictions", seg, "--organ", "liver",
                         "--out", root, "--quiet"], capsys)
    _one_line_error(code, err, str(root), "input")
    assert sorted(p.name for p in root.iterdir()) == before


def test_pack_refuses_a_folder_and_an_existing_file_without_overwrite(release: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    mine = _user_folder(tmp_path)
    code, _, err = _cli(["pack", release / "liver.edgemed", "--out", mine], capsys)
    _one_line_error(code, err, str(mine), "is a folder where a file goes")
    tar = tmp_path / "liver.tar"
    tar.write_bytes(b"old")
    code, _, err = _cli(["pack", release / "liver.edgemed", "--out", tar], capsys)
    _one_line_error(code, err, str(tar), "already exists")
    assert tar.read_bytes() == b"old"
    code, _, err = _cli(["pack", release / "liver.edgemed", "--out", tar, "--overwrite"], capsys)
    assert code == 0, err
    assert tar.stat().st_size > 1000


def test_library_default_is_no_overwrite(archives: dict[str, Path], tmp_path: Path) -> None:
    dest = extract_artifact(archives["liver.edgemed"], tmp_path / "b.edgemed")
    with pytest.raises(OutputError, match="--overwrite") as info:
        extract_artifact(archives["liver.edgemed"], dest)
    assert info.value.path == dest
    assert extract_artifact(archives["liver.edgemed"], dest, overwrite=True) == dest
    assert output_kind(dest) == "bundle"


# ---------------------------------------------------------------------------- the file system refuses

def test_unpack_onto_a_full_disk_blames_the_disk(archives: dict[str, Path], tmpfs: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    filler = tmpfs / "filler.bin"
    st = os.statvfs(tmpfs)
    filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 8192))
    dest = tmpfs / "liver.edgemed"
    code, _, err = _cli(["unpack", archives["liver.edgemed"], "--out", dest], capsys)
    line = _one_line_error(code, err, str(dest), "no space left", "free space")
    assert "damaged" not in line and "archive" not in line
    assert sorted(p.name for p in tmpfs.iterdir()) == ["filler.bin"]  # no half-written artifact, no temporaries


def test_read_only_file_system_unpack(archives: dict[str, Path], tmpfs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _read_only(tmpfs)
    dest = tmpfs / "liver.edgemed"
    code, _, err = _cli(["unpack", archives["liver.edgemed"], "--out", dest], capsys)
    _one_line_error(code, err, str(dest), "read-only file system")


def test_read_only_file_system_export_end_to_end(release: Path, tmpfs: Path) -> None:
    _read_only(tmpfs)
    res = _run(["export", release / "student", "--out", tmpfs / "liver.edgemed"])
    _one_line_error(res.returncode, res.stderr, "read-only file system", "writable")


def test_read_only_file_system_segment_mask(tiny: tuple[Path, Path, Path], tmpfs: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    bundle, scan, _ = tiny
    _read_only(tmpfs)
    code, _, err = _cli(["segment", bundle, scan, "--out", tmpfs / "mask.nii.gz"], capsys)
    _one_line_error(code, err, "mask.nii.gz", "read-only file system")


def test_name_too_long_segment(tiny: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle, scan, _ = tiny
    long = tmp_path / ("m" * 300 + ".nii.gz")
    code, _, err = _cli(["segment", bundle, scan, "--out", long], capsys)
    _one_line_error(code, err, "name too long", "shorter")


def test_name_too_long_unpack_end_to_end(archives: dict[str, Path], tmp_path: Path) -> None:
    res = _run(["unpack", archives["liver.edgemed"], "--out", tmp_path / ("b" * 300)])
    _one_line_error(res.returncode, res.stderr, "name too long")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archives", "release"]


def test_a_bare_os_error_is_one_line(archives: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    import edgemed.artifacts

    def busy(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), "/mnt/models")

    monkeypatch.setattr(edgemed.artifacts, "extract_artifact", busy)
    code, _, err = _cli(["unpack", archives["liver.edgemed"], "--out", tmp_path / "x"], capsys)
    _one_line_error(code, err, "/mnt/models", "busy")


@pytest.mark.parametrize("code, words", [
    (errno.ENOSPC, "no space left"), (errno.EROFS, "read-only"), (errno.EACCES, "permission denied"),
    (errno.EPERM, "not permitted"), (errno.EISDIR, "is a folder"), (errno.ENOTDIR, "not a folder"),
    (errno.EBUSY, "busy"), (errno.ENAMETOOLONG, "too long"), (errno.EEXIST, "already exists"),
    (errno.ENOENT, "does not exist"),
])
def test_errno_words(code: int, words: str) -> None:
    text = describe_os_error(OSError(code, os.strerror(code), "/data/out"))
    assert text.startswith("/data/out: ") and words in text and " — " in text and "\n" not in text


# --------------------------------------------------------------------------- modes, leftovers, all-or-nothing

@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_outputs_get_the_umask(archives: dict[str, Path], tmp_path: Path, umask: int, file_mode: int,
                               dir_mode: int) -> None:
    old = os.umask(umask)
    try:
        dest = extract_artifact(archives["liver.edgemed"], tmp_path / "b.edgemed")
        with atomic_file(tmp_path / "mask.nii.gz") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert (dest / "manifest.json").stat().st_mode & 0o777 == file_mode
    assert dest.stat().st_mode & 0o777 == dir_mode
    assert (tmp_path / "mask.nii.gz").stat().st_mode & 0o777 == file_mode


def test_segment_mask_gets_the_umask(tiny: tuple[Path, Path, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    bundle, scan, _ = tiny
    old = os.umask(0o022)
    try:
        code, _, err = _cli(["segment", bundle, scan, "--out", tmp_path / "mask.nii.gz"], capsys)
    finally:
        os.umask(old)
    assert code == 0, err
    assert (tmp_path / "mask.nii.gz").stat().st_mode & 0o777 == 0o644


def test_leftover_temporary_of_a_killed_writer_is_removed(tmp_path: Path) -> None:
    dead = 2 ** 22 + 7  # above the default pid_max of 4194304: no process has it
    stale = tmp_path / f".mask.nii.gz.{dead}.abc123.tmp"
    stale.write_bytes(b"half a mask")
    with atomic_file(tmp_path / "mask.nii.gz") as tmp:
        tmp.write_bytes(b"mask")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz"]


def test_several_outputs_appear_together_or_not_at_all(tmp_path: Path) -> None:
    mask, seg = tmp_path / "mask.nii.gz", tmp_path / "seg.dcm"
    seg.write_bytes(b"old seg")
    with pytest.raises(RuntimeError):
        with atomic_files(mask, seg) as (m, s):
            m.write_bytes(b"new mask")
            raise RuntimeError("the DICOM-SEG writer failed")
    assert not mask.exists() and seg.read_bytes() == b"old seg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.dcm"]
    with atomic_files(mask, seg) as (m, s):
        m.write_bytes(b"new mask")
        s.write_bytes(b"new seg")
    assert mask.read_bytes() == b"new mask" and seg.read_bytes() == b"new seg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz", "seg.dcm"]
