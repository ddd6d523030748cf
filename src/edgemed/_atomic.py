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

__all__ = ["atomic_dir", "atomic_file"]

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


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
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent))
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
        elif p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


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
