"""Write files and directories so a crash leaves the old version or the new one, never half of one."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_dir", "atomic_file", "atomic_files", "describe_os_error", "output_error"]

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2

# errno → (the cause in words, what to do) for an output path; the CLI prints "error: PATH: CAUSE — TODO".
_OUTPUT_ERRNO: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device", "free space or choose another --out on a disk with room"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota or choose another --out"),
    errno.EFBIG: ("file too large for this file system", "choose another --out on a file system that holds it"),
    errno.EROFS: ("read-only file system", "choose another --out on a writable disk"),
    errno.EACCES: ("permission denied", "choose a folder you may write to, or fix its permissions"),
    errno.EPERM: ("operation not permitted", "choose a folder you may write to, or fix its permissions"),
    errno.EISDIR: ("is a folder where a file goes", "give a file path (e.g. mask.nii.gz), not a folder"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose another --out"),
    errno.EBUSY: ("busy (a mount point or in use by another program)", "choose another --out or retry when it is free"),
    errno.ENAMETOOLONG: ("name too long for the file system", "choose a shorter --out"),
    errno.EEXIST: ("already exists", "remove it or choose another --out"),
    errno.ENOTEMPTY: ("folder is not empty", "empty it or choose another --out"),
    errno.ENOENT: ("its folder does not exist or vanished while writing", "create the folder or choose another --out"),
    errno.EXDEV: ("crosses file systems", "choose an --out on the same file system"),
    errno.EIO: ("input/output error (a failing disk or a lost network mount?)", "check the disk, or choose another --out"),
    errno.ELOOP: ("too many symbolic links", "choose another --out"),
}
# What edgemed's writes can hit that says nothing about the data being read (used to blame the disk).
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def describe_os_error(err: OSError, path: object = None, *, output: bool = True) -> str:
    """One line, "PATH: CAUSE — WHAT TO DO", for an OS error (output-path advice unless `output` is False)."""
    where = path if path is not None else (err.filename if err.filename is not None else None)
    cause, todo = _OUTPUT_ERRNO.get(err.errno or 0, (err.strerror or str(err), "check the path and retry"))
    if not output:
        todo = {errno.ENOENT: "check the path", errno.EISDIR: "give a file, not a folder"}.get(
            err.errno or 0, todo.replace(" or choose another --out", "").replace("choose another --out", "check the path"))
        if err.errno == errno.ENOENT:
            cause = "no such file or folder"
    return f"{where}: {cause} — {todo}" if where is not None else f"{cause} — {todo}"


def output_error(err: OSError, path: str | os.PathLike[str]) -> Exception:
    """`err` as an `OutputError` naming the output `path` (chain it: `raise output_error(err, p) from err`)."""
    from edgemed.errors import OutputError

    return OutputError(describe_os_error(err, path), path=path)


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask is set-and-return)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`.

    The file gets the mode a plain open() would (0o666 less the umask), not mkstemp's 0o600; a
    writer of a private file (a private key) chmods the yielded path to 0o600 before writing.
    Temporary files of killed writers are removed by the next write to `path`. OS errors become an
    `OutputError` naming `path`, except read errors of the caller's own inputs, which pass through.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _clean_leftovers(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())
    except OSError as err:
        raise output_error(err, target) from err
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as err:
        if _is_write_error(err, tmp_path, target):
            raise output_error(err, target) from err
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_files(*paths: str | os.PathLike[str]) -> Iterator[tuple[Path, ...]]:
    """Yield one temporary path per output (same name, in a hidden folder beside it); on success move
    all of them into place, so several outputs of one command appear together or not at all.

    A failure while writing leaves every target as it was. (The final renames are quick but not one
    step: a kill between two of them leaves the first new, the rest old.)
    """
    targets = [Path(p) for p in paths]
    tmps: list[Path] = []
    try:
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            _clean_leftovers(target)
            tmps.append(Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp",
                                              dir=target.parent)))
    except OSError as err:
        for t in tmps:
            shutil.rmtree(t, ignore_errors=True)
        raise output_error(err, targets[len(tmps)]) from err
    staged = tuple(t / target.name for t, target in zip(tmps, targets))
    try:
        yield staged
        for src, target in zip(staged, targets):
            if src.exists():  # each writer wrote its file with atomic_file: the umask's mode already
                try:
                    os.replace(src, target)
                except OSError as err:
                    raise output_error(err, target) from err
    except OSError as err:
        hit = next((t for s, t in zip(staged, targets) if err.filename and Path(err.filename) == s), None)
        if hit is not None or (err.errno in OUTPUT_ERRNOS):
            raise output_error(err, hit or targets[0]) from err
        raise
    finally:
        for t in tmps:
            shutil.rmtree(t, ignore_errors=True)


def _is_write_error(err: OSError, tmp: Path, target: Path) -> bool:
    """Whether an OS error inside an atomic write is about the output (not an input being read)."""
    if err.errno in OUTPUT_ERRNOS:
        return True
    names = {str(n) for n in (err.filename, err.filename2) if n is not None}
    return any(n == str(target) or n.startswith(str(tmp)) for n in names)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; on success it replaces `path`.

    On Linux the new directory and the old one are swapped in one step (renameat2 with
    RENAME_EXCHANGE), so at every instant `path` is the complete old artifact or the complete new
    one, whenever the process is killed. Elsewhere (or on a file system without the exchange) the
    old one is moved aside and the new one renamed in; a kill between those two renames leaves
    `path` absent with the old artifact beside it, which the next write to `path` puts back.
    Leftovers of killed writers (their temporary directories) are removed by the next write.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _clean_leftovers(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0o700; an artifact gets a plain mkdir's mode
    except OSError as err:
        raise output_error(err, target) from err
    try:
        yield tmp
        if target.exists():
            if not overwrite:
                raise FileExistsError(f"{target} exists; pass overwrite=True or choose another --out.")
            if _exchange(tmp, target):
                return  # tmp now holds the old artifact; the finally clause removes it
            old = target.with_name(f".{target.name}.{os.getpid()}.old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except OSError as err:
        if _is_write_error(err, tmp, target):
            raise output_error(err, target) from err
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if sys.platform != "linux":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:  # glibc < 2.28, musl
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _clean_leftovers(target: Path) -> None:
    """Remove the temporary directories of writers to `target` that were killed; restore an old
    artifact a killed fallback-path writer left aside."""
    for p in target.parent.glob(f".{glob.escape(target.name)}.*"):
        parts = p.name[len(target.name) + 2:].split(".")
        if len(parts) < 2 or not parts[0].isdigit() or parts[-1] not in ("tmp", "old") or _alive(int(parts[0])):
            continue
        if parts[-1] == "old" and not target.exists():
            os.replace(p, target)
        elif p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif parts[-1] == "tmp":  # an atomic_file temporary
            p.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
