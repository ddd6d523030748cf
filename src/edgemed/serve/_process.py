"""One series in, one DICOM-SEG out: route it to a bundle, segment it, write the SEG with derived UIDs."""

from __future__ import annotations

import re
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemed.errors import InputError
from edgemed.serve._config import BundleConfig, NodeConfig, RouteConfig

__all__ = ["Processor", "Routed", "seg_uids"]

_NAMESPACE = uuid.UUID("6f1c3a52-8d0e-5b7a-9e44-2b6a1d0c9e11")  # edgemed's namespace for derived SEG UIDs


def seg_uids(source_series_uid: str, bundle_digest: str) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of the SEG for a source series and bundle: the same inputs give
    the same UIDs, so a SEG recomputed after a crash or retry replaces the earlier one instead of doubling it."""
    # A UUID-derived UID (2.25.<uuid as integer>, PS3.5 B.2) from a name-based UUID (version 5). Not
    # pydicom's generate_uid: with prefix=None it ignores entropy_srcs and returns a random UID.
    def uid(role: str) -> str:
        return f"2.25.{uuid.uuid5(_NAMESPACE, f'{source_series_uid}|{bundle_digest}|{role}').int}"

    return uid("seg-series"), uid("seg-instance")


@dataclass(frozen=True)
class Routed:
    """What a route decided for a series: the bundle and the organs (label id → name) to put in the SEG."""

    bundle: BundleConfig
    route: RouteConfig


def route_for(config: NodeConfig, header: Any) -> Routed | None:
    """The first route whose conditions the series' header meets (None: the node does not handle it)."""
    modality = str(getattr(header, "Modality", "") or "")
    body_part = str(getattr(header, "BodyPartExamined", "") or "")
    description = str(getattr(header, "SeriesDescription", "") or "")
    bundles = {b.name: b for b in config.bundles}
    for route in config.routes:
        if route.modality is not None and route.modality.upper() != modality.upper():
            continue
        if route.body_part is not None and route.body_part.upper() != body_part.upper():
            continue
        if route.series_description is not None and not re.search(route.series_description, description, re.I):
            continue
        return Routed(bundles[route.bundle], route)
    return None


class Processor:
    """Holds one loaded runtime per bundle (loaded on first use) and turns a series folder into a SEG file."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._segmenters: dict[str, Any] = {}

    def digest(self, bundle: BundleConfig) -> str:
        return str(self._segmenter(bundle).bundle.manifest.digest)

    def _segmenter(self, bundle: BundleConfig) -> Any:
        if bundle.name not in self._segmenters:
            from edgemed import runtime

            self._segmenters[bundle.name] = runtime.load(bundle.path, backend=bundle.backend,
                                                         threads=self.config.threads)
        return self._segmenters[bundle.name]

    def route(self, images: Path) -> Routed | None:
        import pydicom

        first = next((p for p in sorted(images.glob("*.dcm"))), None)
        if first is None:
            raise InputError("the series folder holds no instance; it cannot be segmented.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = pydicom.dcmread(first, stop_before_pixels=True)
        return route_for(self.config, header)

    def segment(self, routed: Routed, images: Path, series_uid: str, out: Path) -> tuple[dict[str, float], Any]:
        """Segment the series in `images` and write its SEG to `out` (durably); returns (stage seconds, the
        runtime's QCReport). The QC summary travels in the SEG (Series and Content Description, Content Label),
        as `edgemed segment --dicom-seg` writes it."""
        from edgemed.io import read_volume, write_dicom_seg

        t0 = time.perf_counter()
        volume = read_volume(images)
        seg = self._segmenter(routed.bundle)
        t1 = time.perf_counter()
        mask, qc = seg.segment_with_qc(volume, batch_size=self.config.batch_size)
        t2 = time.perf_counter()
        organs = {o.label_id: o.name for o in seg.organs
                  if not routed.route.organs or o.name in routed.route.organs}
        if not organs:
            raise InputError(f"route for bundle {routed.bundle.name!r} asks for organs {list(routed.route.organs)}, "
                             f"which the bundle does not segment ({', '.join(o.name for o in seg.organs)}); fix "
                             "[[routes]] organs.")
        series, instance = seg_uids(series_uid, str(seg.bundle.manifest.digest))
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            raw = write_dicom_seg(mask, images, Path(tmp) / "seg.dcm", organs, algorithm=routed.bundle.name,
                                  note=qc.summary())
            _set_uids(raw, out, series, instance)
        t3 = time.perf_counter()
        return {"read": t1 - t0, "infer": t2 - t1, "write": t3 - t2}, qc

    def close(self) -> None:
        for seg in self._segmenters.values():
            seg.close()
        self._segmenters.clear()


def _set_uids(raw: Path, out: Path, series: str, instance: str) -> None:
    """Give the SEG written by `write_dicom_seg` its derived UIDs and store it durably."""
    import io

    import pydicom

    from edgemed.serve._queue import write_durably

    ds = pydicom.dcmread(raw)
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = instance
    ds.file_meta.MediaStorageSOPInstanceUID = instance
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    write_durably(out, buffer.getvalue())
