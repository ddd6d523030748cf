"""The node's main loop: inputs fill the queue; one worker closes quiet series, segments, and delivers."""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import threading
import time
from typing import Any

from edgemed.errors import ConfigError, EdgemedError, InputError
from edgemed.serve._config import NodeConfig
from edgemed.serve._process import Processor
from edgemed.serve._queue import Queue

__all__ = ["node_status", "run_node"]

_log = logging.getLogger("edgemed.serve")


def _setup_logging() -> None:
    """Node logs go to stderr, every record (pynetdicom's, dicomweb-client's too) through the redaction filter."""
    from edgemed.io import RedactingLogFilter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingLogFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    _log.setLevel(logging.INFO)
    # These libraries name instances by UID in their own messages; keep them to errors (still redacted).
    for name in ("pynetdicom", "dicomweb_client", "pydicom", "highdicom"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_node(config: NodeConfig, *, stop: threading.Event | None = None) -> None:
    """Run the node until SIGTERM/SIGINT (or `stop` is set): receive, queue, segment, deliver.

    Example:
        >>> from edgemed.serve import load_config, run_node
        >>> run_node(load_config("node.toml"))   # what `edgemed serve node.toml` does
    """
    _setup_logging()
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    queue = Queue(config.folder)
    processor = Processor(config)
    for bundle in config.bundles:  # load every bundle now: a wrong path fails at start, not at the first series
        try:
            processor.digest(bundle)
        except EdgemedError as err:
            raise ConfigError(f"[[bundles]] name={bundle.name!r} path={bundle.path}: {err}") from err
    listener = None
    poller = None
    if config.dimse is not None:
        from edgemed.serve._dimse import start_listener

        listener = start_listener(config.dimse, queue)
    if config.dicomweb is not None:
        from edgemed.serve._dicomweb import Poller

        poller = Poller(config.dicomweb, queue, tuple(r.modality for r in config.routes), config.quiet_period_s)
    from edgemed.serve._http import start_http

    http = start_http(config.http, queue)
    ready = queue.summary()
    _log.info("node up: %d series pending (%s); C-STORE %s; DICOMweb %s; metrics %s", ready["queue_length"],
              ", ".join(f"{k} {v}" for k, v in sorted(ready["states"].items())) or "empty",
              f"port {config.dimse.port}" if config.dimse else "off",
              "polling" if poller else "off",
              f"port {config.http.port} (/healthz, /metrics)" if http else "off")
    next_poll = 0.0
    try:
        while not stop.is_set():
            worked = False
            if poller is not None and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + config.dicomweb.poll_interval_s  # type: ignore[union-attr]
                try:
                    worked |= poller.poll() > 0
                except Exception as err:  # noqa: BLE001 (PACS down or answering nonsense: poll again later)
                    queue.bump("poll_failures")
                    _log.warning("DICOMweb poll failed (%s); trying again in %.0f s", type(err).__name__,
                                 config.dicomweb.poll_interval_s)  # type: ignore[union-attr]
            for key in queue.close_quiet(config.quiet_period_s):
                _log.info("series %s: complete (quiet for %.0f s), queued", key, config.quiet_period_s)
            row = queue.next_queued()
            if row is not None:
                _process(row, queue, processor, config)
                worked = True
            row = queue.next_ready()
            if row is not None:
                _deliver(row, queue, config)
                worked = True
            if not worked:
                stop.wait(0.2)
    finally:
        if listener is not None:
            listener.shutdown()
        if http is not None:
            http.shutdown()
        processor.close()
        _log.info("node stopped")


def _process(row: Any, queue: Queue, processor: Processor, config: NodeConfig) -> None:
    from edgemed.io import redact

    key = row["key"]
    images = queue.images(key)
    try:
        routed = processor.route(images)
        if routed is None:
            queue.set_state(key, "skipped")
            _log.info("series %s: no route matches it; skipped", key)
            _drop_images(queue, key, config)
            return
        seconds, qc = processor.segment(routed, images, row["series_uid"], queue.result_path(key))
    except Exception as err:  # noqa: BLE001 (one bad series must not stop the node, nor stop it again on restart)
        # edgemed's messages are redacted already (UIDs and dates go here too); another library's may quote a
        # header value, so only its type is kept.
        message = redact(str(err)) if isinstance(err, EdgemedError) else f"{type(err).__name__} (details withheld: " \
            "a library's message may quote header values)"
        queue.set_state(key, "failed", error=message[:500])
        _log.error("series %s: cannot be segmented: %s", key, message)
        return
    if not queue.set_state(key, "ready", only_from="queued", bundle=routed.bundle.name,
                           seg_path=str(queue.result_path(key)), segment_s=sum(seconds.values()), next_try_at=0,
                           attempts=0, qc=qc.verdict):
        _log.info("series %s: more instances came while it was segmented; it is done again when complete", key)
        return
    _log.info("series %s: segmented with %s in %.1f s (read %.1f, infer %.1f, write SEG %.1f); %s", key,
              routed.bundle.name, sum(seconds.values()), seconds["read"], seconds["infer"], seconds["write"],
              qc.summary())


def _deliver(row: Any, queue: Queue, config: NodeConfig) -> None:
    from edgemed.serve._dicomweb import send_stow
    from edgemed.serve._dimse import send_c_store

    key = row["key"]
    seg = queue.result_path(key)
    t0 = time.perf_counter()
    try:
        (send_c_store if config.output.kind == "dimse" else send_stow)(config.output, seg)
    except Exception as err:  # noqa: BLE001 (whatever the PACS or the network did: keep the SEG, retry later)
        from edgemed.io import redact

        # Our own ConnectionError messages name only hosts, ports and statuses; others keep only their type.
        text = f"{type(err).__name__}: {redact(str(err))}" if isinstance(err, ConnectionError) else type(err).__name__
        delay = queue.delivery_failed(key, text[:300], initial_s=config.output.retry_initial_s,
                                      max_s=config.output.retry_max_s)
        _log.warning("series %s: delivery failed (%s); retry %d in %.0f s", key, text, row["attempts"] + 1, delay)
        return
    done = time.time()
    queue.set_state(key, "delivered", delivered_at=done, deliver_s=time.perf_counter() - t0, error=None)
    _log.info("series %s: SEG delivered (%.1f s after its last instance)", key, done - row["last_instance_at"])
    _drop_images(queue, key, config)
    if not config.keep_images:
        seg.unlink(missing_ok=True)


def _drop_images(queue: Queue, key: str, config: NodeConfig) -> None:
    if not config.keep_images:
        shutil.rmtree(queue.images(key), ignore_errors=True)


def node_status(folder: str) -> dict[str, Any]:
    """The queue's summary, read-only, for `edgemed serve --status` (the node may be running).

    Raises:
        InputError: The folder holds no node queue.
    """
    from pathlib import Path

    if not (Path(folder) / "queue.sqlite").is_file():
        raise InputError(f"{folder} holds no node queue (queue.sqlite); start the node first: edgemed serve CONFIG.toml")
    summary = Queue(folder, read_only=True).summary()
    lat = summary.pop("latency_s")
    summary["latency_s"] = {stage: _quantiles(values) for stage, values in lat.items()}
    return summary


def _quantiles(values: list[float]) -> dict[str, float | int | None]:
    ordered = sorted(values)

    def q(p: float) -> float | None:
        return None if not ordered else round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3)

    return {"n": len(ordered), "p50": q(0.5), "p90": q(0.9), "max": ordered[-1] if ordered else None}
