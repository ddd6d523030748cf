"""DICOM networking (pynetdicom): the C-STORE listener that receives series, and C-STORE out for SEGs."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

from edgemed._deps import require
from edgemed.errors import ConfigError
from edgemed.serve._config import DimseInputConfig, OutputConfig, TlsConfig
from edgemed.serve._queue import Queue, series_key, write_durably

__all__ = ["send_c_store", "start_listener"]

_log = logging.getLogger("edgemed.serve")

# C-STORE statuses (PS3.4 B.2.3): 0x0000 success; 0xA700 out of resources; 0xC000 cannot understand.
_SUCCESS, _OUT_OF_RESOURCES, _CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000


def _ssl_context(tls: TlsConfig, *, server: bool) -> ssl.SSLContext:
    purpose = ssl.Purpose.CLIENT_AUTH if server else ssl.Purpose.SERVER_AUTH
    try:
        ctx = ssl.create_default_context(purpose, cafile=tls.ca)
        ctx.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"TLS: cannot load cert={tls.cert} / key={tls.key} / ca={tls.ca} ({err}); fix the "
                          "[...tls] paths.") from err
    if server and tls.ca:
        ctx.verify_mode = ssl.CERT_REQUIRED  # peers must present a certificate signed by this CA
    if not server:
        ctx.check_hostname = False  # DICOM peers are addressed by IP; the CA still vouches for the certificate
    return ctx


def start_listener(config: DimseInputConfig, queue: Queue) -> Any:
    """Start the C-STORE SCP in background threads; returns the pynetdicom server (call .shutdown()).

    An instance is acknowledged (status 0x0000) only after it is on disk (fsync'd, renamed into place) and
    recorded in the queue; anything else answers a failure status, so the sender keeps it and retries.
    """
    require("pynetdicom", extra="serve")
    from pynetdicom import AE, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title=config.ae_title)
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(Verification)
    if "*" not in config.allowed_ae_titles:
        ae.require_calling_aet = list(config.allowed_ae_titles)  # others: association rejected
    ae.maximum_pdu_size = 0

    def on_store(event: Any) -> int:
        try:
            ds = event.dataset
            series_uid, study_uid, sop_uid = str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)
        except Exception:  # noqa: BLE001 (a dataset pynetdicom cannot decode, or without the UIDs a series needs)
            _log.warning("refused an instance without readable study/series/SOP instance UIDs")
            return _CANNOT_UNDERSTAND
        key = series_key(series_uid)
        try:
            write_durably(queue.images(key) / f"{series_key(sop_uid)}.dcm", event.encoded_dataset(include_meta=True))
            queue.instance_received(series_uid, study_uid, "dimse")
        except Exception as err:  # noqa: BLE001 (disk full, database locked: the sender must retry)
            _log.error("series %s: could not store an instance (%s); answered 'out of resources'", key,
                       type(err).__name__)
            return _OUT_OF_RESOURCES
        return _SUCCESS

    def on_rejected(event: Any) -> None:
        _log.warning("refused an association from AE title %s (not in allowed_ae_titles)",
                     event.assoc.requestor.ae_title)

    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its INFO/DEBUG lines dump headers
    ctx = _ssl_context(config.tls, server=True) if config.tls else None
    try:
        server = ae.start_server((config.bind, config.port), block=False, ssl_context=ctx,
                                 evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_REJECTED, on_rejected)])
    except OSError as err:
        raise ConfigError(f"[inputs.dimse] cannot listen on {config.bind}:{config.port} ({err.strerror}); pick a "
                          "free port or stop what holds it.") from err
    return server


def send_c_store(config: OutputConfig, seg_file: Path) -> None:
    """C-STORE one SEG to the PACS; raises ConnectionError (to be retried) if it is not stored."""
    require("pynetdicom", extra="serve")
    import pydicom
    from pynetdicom import AE
    from pynetdicom.sop_class import SegmentationStorage  # type: ignore[attr-defined]
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    ds = pydicom.dcmread(seg_file)
    ae = AE(ae_title=config.calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = config.timeout_s
    ae.add_requested_context(SegmentationStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    tls = (_ssl_context(config.tls, server=False), "") if config.tls else None
    assoc = ae.associate(config.host, config.port, ae_title=config.ae_title, tls_args=tls)
    if not assoc.is_established:
        raise ConnectionError(f"no association with {config.ae_title}@{config.host}:{config.port}")
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    code = getattr(status, "Status", None)
    if code is None:
        raise ConnectionError("the C-STORE got no answer")
    if code not in (0x0000, 0xB000, 0xB007, 0xB006):  # success, or stored with a warning
        raise ConnectionError(f"the PACS answered C-STORE status 0x{code:04X}")
