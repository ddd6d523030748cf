"""A sharded store of teacher outputs: the teacher runs once per scan, in parallel, and students stream from disk.

Layout of a store directory::

    store.json                 index: organs, temperature, precision, teacher identity, one entry per shard
    shards/<scan>-<sha>.npz    one scan: "mask" uint8 (X, Y, Z) and, for a scoring teacher,
                               "probabilities" (1 + organs, X, Y, Z) float16 or uint8, compressed
    shards/<scan>-<sha>.json   that shard's record: scan name, sha256 and shape, organs, shard sha256

Under torchrun, process r of N computes scans r, r + N, …; every file is written atomically, a
shard whose record matches is skipped on a rerun, and rank 0 writes the index at the end. Loading
uses `np.load(allow_pickle=False)` and checks the shard's sha256 first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemed._atomic import atomic_file
from edgemed.artifacts import ShardEntry, ShardRecord, StoreHeader, TeacherStoreIndex, combined_sha256, sha256_file
from edgemed.compress._progress import progress_bar
from edgemed.errors import ArtifactError, ConfigError, EdgemedWarning, InputError
from edgemed.io import Volume, load_label_map, read_volume

__all__ = ["TeacherStore", "TeacherStoreConfig", "precompute_teacher"]

STORE_SCHEMA = 1
_INDEX = "store.json"
_DTYPES = ("float16", "uint8")


@dataclass(frozen=True, slots=True, kw_only=True)
class TeacherStoreConfig:
    """What a teacher store holds.

    Attributes:
        organs: Organs by name or id in `label_map`; the store holds these (plus background) only.
        label_map: "totalsegmentator", "totalsegmentator_mr" or a JSON file.
        temperature: KD temperature the probabilities are stored at (distill must use the same).
        dtype: "float16" (default; ~3 significant digits) or "uint8" (probabilities in steps of 1/255).
    """

    organs: tuple[str, ...]
    label_map: str = "totalsegmentator"
    temperature: float = 2.0
    dtype: str = "float16"

    def __post_init__(self) -> None:
        object.__setattr__(self, "organs", tuple(str(o) for o in self.organs))
        if not self.organs:
            raise ConfigError("no organ given; name at least one, e.g. --organ liver.")
        if self.temperature <= 0:
            raise ConfigError(f"temperature={self.temperature} must be > 0; use distill's --temperature.")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"dtype={self.dtype!r}; use one of {', '.join(_DTYPES)}.")


def precompute_teacher(scans: Sequence[str | os.PathLike[str] | Volume], teacher: Any,
                       store: str | os.PathLike[str], config: TeacherStoreConfig, *,
                       progress: bool = True) -> TeacherStore:
    """Run `teacher` once on every scan and store its outputs for `config.organs`, one shard per scan.

    Under `torchrun --nproc_per_node N`, process r handles scans r, r + N, … (each loads its own
    teacher, on its own GPU with nccl); shards already there with a matching record are skipped,
    so a rerun after a crash computes only what is missing or damaged.

    Args:
        scans: NIfTI files, DICOM series folders, or Volumes.
        teacher: Any `edgemed.models.teachers.Teacher` (stored predictions too: `StoredPredictions`).
        store: The store directory (created; filled in place).
        config: Organs, temperature and precision of the store.

    Returns:
        The store, opened (its index lists every scan given).

    Raises:
        ConfigError: The directory holds a store for other organs, temperature, precision or teacher.
        OutputError: `store` is a file, a folder that is not a teacher store, or cannot be written.

    Example:
        >>> teacher = load_teacher("Dataset291_TotalSegmentator_part1_organs_1559subj")   # doctest: +SKIP
        >>> precompute_teacher(scans, teacher, "store/liver", TeacherStoreConfig(organs=("liver",)))  # doctest: +SKIP
    """
    from edgemed.compress._dist import distributed

    from edgemed.artifacts import check_output

    if not scans:
        raise ConfigError("no scans given; pass at least one with --scans.")
    # A store is filled in place, never replaced (a rerun adds what is missing), so a store there is
    # accepted as it is; any other folder is refused.
    check_output(store, kind="teacher store", overwrite=True, inputs=scans, layout=(_INDEX, "shards"))
    with distributed() as ctx:
        return _precompute(scans, teacher, Path(store), config, progress and ctx.is_main, ctx)


def _precompute(scans, teacher, root: Path, config: TeacherStoreConfig, progress: bool, ctx) -> TeacherStore:  # type: ignore[no-untyped-def]
    label_map = load_label_map(config.label_map)
    ids = label_map.resolve(config.organs)
    header = StoreHeader(organs=tuple((int(i), label_map.name_of(i)) for i in ids), label_map=label_map.name,
                         temperature=float(config.temperature), dtype=config.dtype, teacher=dict(teacher.identity()))
    if (root / _INDEX).is_file():
        _check_header(root, _read_index(root).header, header)
    if ctx.is_main and ctx.world_size > len(scans):
        warnings.warn(f"{ctx.world_size} processes for {len(scans)} scan(s): processes {len(scans)}…"
                      f"{ctx.world_size - 1} have nothing to compute and only wait.", EdgemedWarning, stacklevel=3)
    shards = root / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    mine = list(enumerate(scans))[ctx.rank::ctx.world_size]
    finished: list[tuple[int, str, bool]] = []  # (scan index, shard key, computed now)
    for i, scan in progress_bar(mine, progress, desc="teacher → store", unit="scan"):
        sha = scan_sha256(scan)
        key = _shard_key(scan, sha, i)
        if _valid_record(shards, key, sha, header) is not None:
            finished.append((i, key, False))
            continue
        volume = scan if isinstance(scan, Volume) else read_volume(scan)
        output = teacher.predict(volume)
        soft = output.kind != "labels"
        arrays = {"mask": output.mask(ids)}
        if soft:
            arrays["probabilities"] = _encode(output.probabilities(ids, temperature=config.temperature), config.dtype)
        with atomic_file(shards / f"{key}.npz") as tmp:
            with open(tmp, "wb") as fh:  # a file object: savez_compressed would append .npz to a path
                np.savez_compressed(fh, **arrays)
        record = ShardRecord(scan=_scan_name(scan, volume, i), scan_sha256=sha, shape=tuple(volume.shape),
                             organs=StoreHeader.to_json(header)["organs"], soft=soft,
                             dtype=config.dtype if soft else None, shard=f"{key}.npz",
                             shard_sha256=sha256_file(shards / f"{key}.npz"), header=header, computed_by_rank=ctx.rank)
        with atomic_file(shards / f"{key}.json") as tmp:
            tmp.write_text(json.dumps(record.to_json(), indent=1) + "\n")
        finished.append((i, key, True))
    # Each process checked or wrote its own shards; rank 0 indexes their records without hashing again.
    everyone = [item for part in ctx.all_gather_object(finished) for item in part]
    if ctx.is_main:
        keys = {i: key for i, key, _ in everyone}
        entries = []
        for i, scan in enumerate(scans):
            if i not in keys:
                raise InputError(f"the shard of scan {i} ({_scan_name(scan, None, i)}) is missing after the run; "
                                 "a process failed: rerun the same command to compute what is missing.")
            entries.append(_parse(ShardRecord, _read_json(shards / f"{keys[i]}.json"), shards).entry())
        computed = sum(now for _, _, now in everyone)
        index = TeacherStoreIndex(schema=STORE_SCHEMA, header=header, shards=tuple(entries),
                                  last_run={"computed": computed, "skipped": len(everyone) - computed,
                                            "processes": ctx.world_size})
        with atomic_file(root / _INDEX) as tmp:
            tmp.write_text(json.dumps(index.to_json(), indent=1) + "\n")
    ctx.barrier()
    return TeacherStore.open(root)


class TeacherStore:
    """A filled teacher store, read one shard at a time.

    Example:
        >>> store = TeacherStore.open("store/liver")
        >>> probs, mask, soft = store.read("ct/case1.nii.gz", read_volume("ct/case1.nii.gz"))
    """

    def __init__(self, root: Path, index: TeacherStoreIndex) -> None:
        self.root = root
        self.index = index
        self._by_sha = {e.scan_sha256: e for e in index.shards}

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> TeacherStore:
        """Open the store at `root`.

        Raises:
            InputError: No store there (never filled, or its fill did not finish).
        """
        root = Path(root)
        if not (root / _INDEX).is_file():
            raise InputError(f"{root} is not a teacher store (no {_INDEX}); fill it first: edgemed precompute "
                             f"--scans … --teacher … --organ … --out {root}")
        return cls(root, _read_index(root))

    @property
    def header(self) -> StoreHeader:
        """Organs, label map, temperature, precision and teacher identity the store was filled with."""
        return self.index.header

    def identity(self) -> dict[str, object]:
        """The teacher's identity (its sha256 stays the lineage parent), plus the store's name and digest."""
        digest = hashlib.sha256("".join(sorted(e.shard_sha256 for e in self.index.shards)).encode()).hexdigest()
        return {**self.header.teacher, "store": {"name": self.root.name, "digest": digest,
                                                 "shards": len(self.index.shards)}}

    def check_matches(self, ids: Sequence[int], label_map: str, temperature: float) -> None:
        """Refuse a distillation the store was not filled for (other organs, or another temperature).

        Raises:
            ConfigError: Says which and how to refill.
        """
        stored = [i for i, _ in self.header.organs]
        names = ", ".join(n for _, n in self.header.organs)
        if stored != [int(i) for i in ids]:
            raise ConfigError(f"{self.root} holds the teacher's outputs for {names} (label ids {stored}); this run asks "
                              f"for label ids {list(ids)} of {label_map}. Fill a store for these organs: edgemed "
                              "precompute --scans … --teacher … --organ … --out <new store>.")
        soft = any(e.soft for e in self.index.shards)
        if soft and abs(self.header.temperature - float(temperature)) > 1e-9:
            raise ConfigError(f"{self.root} stores probabilities at temperature {self.header.temperature}; this run "
                              f"uses {temperature}. Distill with --temperature {self.header.temperature}, or refill "
                              "a store at this temperature (edgemed precompute --temperature …).")

    def read(self, scan: str | os.PathLike[str] | Volume, volume: Volume) -> tuple[np.ndarray, np.ndarray, bool]:
        """(probabilities float32 (1 + organs, X, Y, Z), mask uint8 (X, Y, Z), soft) of one scan.

        Raises:
            InputError: No shard for this scan, or a shard that is damaged or on another grid.
        """
        sha = scan_sha256(scan)
        entry = self._by_sha.get(sha)
        name = _scan_name(scan, volume, 0)
        if entry is None:
            raise InputError(f"{self.root} has no shard for scan {name} (sha256 {sha[:12]}…); add it with edgemed "
                             f"precompute --scans … --out {self.root} (finished shards are skipped).")
        path = self.root / "shards" / entry.shard
        if not path.is_file() or sha256_file(path) != entry.shard_sha256:
            raise InputError(f"shard {path} of scan {name} is missing or damaged (sha256 differs from the index); "
                             "delete it and rerun edgemed precompute with the same options to recompute it.")
        try:
            with np.load(path, allow_pickle=False) as data:
                mask = data["mask"]
                stored = data["probabilities"] if entry.soft else None
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"shard {path} cannot be read ({err}); delete it and rerun edgemed precompute.") from err
        if tuple(mask.shape) != tuple(volume.shape):
            raise InputError(f"shard {path} is {tuple(mask.shape)} but scan {name} is {tuple(volume.shape)}; "
                             "the store belongs to other scans.")
        k = 1 + len(self.header.organs)
        if stored is None:
            probs = np.zeros((k, *mask.shape), np.float32)
            for c in range(k):
                probs[c] = mask == c
        else:
            probs = _decode(stored)
        return probs, mask, entry.soft


def scan_sha256(scan: str | os.PathLike[str] | Volume) -> str:
    """sha256 of a scan: its file, the files of its DICOM folder, or a Volume's voxels and affine."""
    if isinstance(scan, Volume):
        digest = hashlib.sha256(np.ascontiguousarray(scan.array).tobytes())
        digest.update(np.asarray(scan.affine, np.float64).tobytes())
        return digest.hexdigest()
    path = Path(scan)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        if not files:
            raise InputError(f"{path} is an empty folder; give a NIfTI file or a DICOM series folder.")
        return combined_sha256(files, path)
    if not path.is_file():
        raise InputError(f"scan {path} does not exist; check the path.")
    return sha256_file(path)


def _encode(probs: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "uint8":
        return np.round(np.clip(probs, 0.0, 1.0) * 255).astype(np.uint8)
    return probs.astype(np.float16)


def _decode(stored: np.ndarray) -> np.ndarray:
    probs = stored.astype(np.float32) / (255.0 if stored.dtype == np.uint8 else 1.0)
    # Rounding moved each voxel's sum off 1 a little; renormalise so targets stay distributions.
    probs /= np.maximum(probs.sum(axis=0, keepdims=True), 1e-6)
    return probs


def _scan_name(scan: object, volume: Volume | None, i: int) -> str:
    if volume is not None and volume.source:
        return Path(volume.source).name
    return Path(scan).name if not isinstance(scan, Volume) else f"volume{i}"  # type: ignore[arg-type]


def _shard_key(scan: object, sha: str, i: int) -> str:
    stem = _scan_name(scan, None, i)
    for ext in (".nii.gz", ".nii", ".nrrd", ".npz"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', stem)[:64]}-{sha[:16]}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path} cannot be read ({err}); delete it and rerun edgemed precompute.") from err


def _read_index(root: Path) -> TeacherStoreIndex:
    raw = _read_json(root / _INDEX)
    if not isinstance(raw, dict) or raw.get("kind") != "teacher_store" or raw.get("schema") != STORE_SCHEMA:
        raise InputError(f"{root / _INDEX} is not a teacher store index of schema {STORE_SCHEMA}; refill it.")
    return _parse(TeacherStoreIndex, raw, root)


def _parse(record: Any, raw: Any, where: Path) -> Any:
    try:
        return record.from_json(raw)
    except ArtifactError as err:
        raise InputError(f"{where}: {err} Delete it and rerun edgemed precompute.") from err


def _valid_record(shards: Path, key: str, sha: str, header: StoreHeader) -> ShardRecord | None:
    """The shard's record when shard and record are whole and match this scan and store; else None."""
    record_path, shard = shards / f"{key}.json", shards / f"{key}.npz"
    if not (record_path.is_file() and shard.is_file()):
        return None
    try:
        record = ShardRecord.from_json(json.loads(record_path.read_text()))
    except (OSError, ValueError, ArtifactError):
        return None
    if record.scan_sha256 != sha or record.header != header:
        return None
    if sha256_file(shard) != record.shard_sha256:
        warnings.warn(f"shard {shard.name} is damaged (sha256 differs from its record); recomputing it.",
                      EdgemedWarning, stacklevel=4)
        return None
    return record


def _check_header(root: Path, stored: StoreHeader, header: StoreHeader) -> None:
    old, new = stored.to_json(), header.to_json()
    differ = [k for k in new if old.get(k) != new[k]]
    if differ:
        raise ConfigError(f"{root} was filled with other {', '.join(differ)} "
                          f"({', '.join(f'{k}={old.get(k)!r}' for k in differ)}); "
                          "a store holds one teacher's outputs for one set of organs. Use another --out, or delete "
                          f"{root} to refill it.")
