"""DICOMweb (dicomweb-client): find series on a PACS (QIDO-RS), fetch them (WADO-RS), store SEGs (STOW-RS)."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

from edgemed._deps import require
from edgemed.serve._config import DicomwebInputConfig, OutputConfig
from edgemed.serve._queue import Queue, series_key, write_durably

__all__ = ["Poller", "send_stow"]

_log = logging.getLogger("edgemed.serve")
_SERIES_UID, _STUDY_UID, _MODALITY, _COUNT = "0020000E", "0020000D", "00080060", "00201209"


def _client(url: str, username: str | None, password: str | None, ca: str | None, timeout_s: float = 30.0) -> Any:
    require("dicomweb_client", extra="serve")
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    if username is not None:
        session.auth = (username, password or "")
    if ca is not None:
        session.verify = ca
    client = DICOMwebClient(url=url, session=session)
    client.set_http_retry_params(retry=False)
    client._session.request = _with_timeout(client._session.request, timeout_s)  # no call may hang the node
    return client


def _with_timeout(request: Any, timeout_s: float) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", timeout_s)
        return request(*args, **kwargs)

    return call


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


class Poller:
    """Polls a PACS for series of the routed modalities; a series whose instance count held still for the
    quiet period is fetched (each instance durably on disk) and queued."""

    def __init__(self, config: DicomwebInputConfig, queue: Queue, modalities: tuple[str | None, ...],
                 quiet_period_s: float) -> None:
        self.config = config
        self.queue = queue
        self.modalities = tuple(sorted({m.upper() for m in modalities if m})) or (None,)
        self.quiet_period_s = quiet_period_s
        self._client = _client(config.url, config.username, config.password, config.ca)

    def poll(self) -> int:
        """One round: look at the PACS, fetch what is complete; returns the number of series queued."""
        for modality in self.modalities:
            filters = {"Modality": modality} if modality else {}
            for item in self._client.search_for_series(search_filters=filters,
                                                       fields=["NumberOfSeriesRelatedInstances"]):
                series_uid, study_uid = _value(item, _SERIES_UID), _value(item, _STUDY_UID)
                if series_uid is None or study_uid is None or _value(item, _MODALITY) == "SEG":
                    continue
                self.queue.remote_seen(str(series_uid), str(study_uid), int(_value(item, _COUNT) or 0))
        queued = 0
        for row in self.queue.remote_stable(self.quiet_period_s):
            self._fetch(row)
            queued += 1
        return queued

    def _fetch(self, row: Any) -> None:
        key = row["key"]
        folder: Path = self.queue.images(key)
        n = 0
        for ds in self._client.iter_series(row["study_uid"], row["series_uid"]):
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            write_durably(folder / f"{series_key(str(ds.SOPInstanceUID))}.dcm", buffer.getvalue())
            n += 1
        self.queue.fetched(key, n)
        _log.info("series %s: fetched %d instances over DICOMweb", key, n)


def send_stow(config: OutputConfig, seg_file: Path) -> None:
    """STOW-RS one SEG to the PACS; raises ConnectionError (to be retried) if it is not stored."""
    import pydicom
    import requests

    client = _client(str(config.url), config.username, config.password, config.ca, config.timeout_s)
    try:
        answer = client.store_instances([pydicom.dcmread(seg_file)])
    except (requests.RequestException, OSError) as err:
        raise ConnectionError(f"STOW-RS failed ({type(err).__name__})") from None
    failed = getattr(answer, "FailedSOPSequence", None)
    if failed:
        reason = getattr(failed[0], "FailureReason", "?")
        raise ConnectionError(f"the PACS refused the SEG over STOW-RS (failure reason {reason})")
