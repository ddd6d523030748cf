"""/healthz and Prometheus /metrics, computed from the queue (so they survive restarts), on a background thread."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edgemed.errors import ConfigError
from edgemed.serve._config import HttpConfig
from edgemed.serve._queue import Queue

__all__ = ["prometheus_text", "start_http"]

_BUCKETS_S = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


def prometheus_text(summary: dict[str, Any]) -> str:
    """The queue's summary in Prometheus text format 0.0.4 (series keys and counts only: no identifier)."""
    lines = [
        "# HELP edgemed_node_queue_length Series received and not yet delivered.",
        "# TYPE edgemed_node_queue_length gauge",
        f"edgemed_node_queue_length {summary['queue_length']}",
        "# HELP edgemed_node_series_done_total Series whose SEG was delivered.",
        "# TYPE edgemed_node_series_done_total counter",
        f"edgemed_node_series_done_total {summary['series_done']}",
        "# HELP edgemed_node_series Series by state.",
        "# TYPE edgemed_node_series gauge",
        *(f'edgemed_node_series{{state="{s}"}} {n}' for s, n in sorted(summary["states"].items())),
        "# HELP edgemed_node_failures_total Series that could not be segmented, and failed delivery attempts.",
        "# TYPE edgemed_node_failures_total counter",
        *(f'edgemed_node_failures_total{{stage="{s}"}} {n}' for s, n in summary["failures"].items()),
        "# HELP edgemed_node_qc_verdicts Series segmented, by the runtime's quality-control verdict.",
        "# TYPE edgemed_node_qc_verdicts gauge",
        *(f'edgemed_node_qc_verdicts{{verdict="{v}"}} {n}' for v, n in sorted(summary["qc_verdicts"].items())),
        "# HELP edgemed_node_stage_seconds Per-stage latency of delivered series (total: last instance to delivered).",
        "# TYPE edgemed_node_stage_seconds histogram",
    ]
    for stage, values in summary["latency_s"].items():
        for bound in _BUCKETS_S:
            lines.append(f'edgemed_node_stage_seconds_bucket{{stage="{stage}",le="{bound}"}} '
                         f"{sum(v <= bound for v in values)}")
        lines += [f'edgemed_node_stage_seconds_bucket{{stage="{stage}",le="+Inf"}} {len(values)}',
                  f'edgemed_node_stage_seconds_sum{{stage="{stage}"}} {sum(values):.6f}',
                  f'edgemed_node_stage_seconds_count{{stage="{stage}"}} {len(values)}']
    return "\n".join(lines) + "\n"


def start_http(config: HttpConfig, queue: Queue) -> ThreadingHTTPServer | None:
    """Serve /healthz and /metrics on config.bind:config.port (port 0: not at all)."""
    if config.port == 0:
        return None

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            try:
                summary = queue.summary()
            except Exception as err:  # noqa: BLE001 (a database that cannot be read: unhealthy, not a crash)
                self._send(503, "text/plain", f"queue unreadable ({type(err).__name__})\n")
                return
            if self.path.split("?")[0] == "/metrics":
                self._send(200, "text/plain; version=0.0.4", prometheus_text(summary))
            elif self.path.split("?")[0] == "/healthz":
                self._send(200, "application/json", json.dumps({"status": "ok",
                                                                "queue_length": summary["queue_length"]}) + "\n")
            else:
                self._send(404, "text/plain", "not found: use /healthz or /metrics\n")

        def _send(self, code: int, kind: str, body: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:  # scrapes are not news
            return

    try:
        server = ThreadingHTTPServer((config.bind, config.port), Handler)
    except OSError as err:
        raise ConfigError(f"[http] cannot listen on {config.bind}:{config.port} ({err.strerror}); pick a free port "
                          "or set port = 0 to turn /metrics off.") from err
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="edgemed-http", daemon=True).start()
    return server
