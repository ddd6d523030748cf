"""A real Orthanc PACS (the Debian package and its DICOMweb plugin) on free loopback ports with a throw-away
storage folder, for the node's tests and benchmark. Never mocked: when Orthanc is not installed, callers skip."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
                                            if Path(p).is_file()), None)


def dicomweb_plugin() -> Path | None:
    for d in PLUGIN_DIRS:
        hits = sorted(d.glob("libOrthancDicomWeb.so*")) if d.is_dir() else []
        if hits:
            return hits[0]
    return None


def missing_reason() -> str | None:
    """Why Orthanc tests cannot run here (None: they can)."""
    if orthanc_binary() is None:
        return "Orthanc is not installed (bash scripts/install.sh --dev installs it as root: apt-get install orthanc)"
    if dicomweb_plugin() is None:
        return "the Orthanc DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """One Orthanc process. `start()`/`stop()` may be called repeatedly (same ports, same storage)."""

    def __init__(self, root: Path, *, modalities: dict[str, tuple[str, int]] | None = None) -> None:
        self.root = root
        self.http_port, self.dicom_port = free_port(), free_port()
        self.aet = "ORTHANC"
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb = f"{self.url}/dicom-web"
        self.proc: subprocess.Popen[bytes] | None = None
        storage = root / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "edgemed-test", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": self.aet,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpServerEnabled": True,
            "Plugins": [str(dicomweb_plugin())],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
            "DicomModalities": {name: [aet, "127.0.0.1", port] for name, (aet, port) in (modalities or {}).items()},
            "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True, "OverwriteInstances": True,
            "DicomScuTimeout": 10, "ConcurrentJobs": 2, "StableAge": 1, "SaveJobs": False,
            "StorageCompression": False,
        }
        self.config = root / "orthanc.json"
        self.config.write_text(json.dumps(config, indent=2))
        self.log = root / "orthanc.log"

    def start(self, timeout_s: float = 20.0) -> "Orthanc":
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([str(orthanc_binary()), str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({self.proc.returncode}); see {self.log}")
            try:
                self.get("/system")
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise RuntimeError(f"Orthanc did not answer within {timeout_s} s; see {self.log}")

    def stop(self, *, discard: bool = False) -> None:
        """Stop Orthanc (about 3 s); `discard`: kill it at once, for storage that is thrown away next."""
        if self.proc is not None and self.proc.poll() is None and discard:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    # -- REST --------------------------------------------------------------------------------------
    def _call(self, method: str, path: str, data: bytes | None = None, kind: str = "application/json") -> bytes:
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={"Content-Type": kind})
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.read()

    def get(self, path: str) -> Any:
        return json.loads(self._call("GET", path))

    def post(self, path: str, body: Any) -> Any:
        return json.loads(self._call("POST", path, json.dumps(body).encode()))

    def upload(self, files: list[Path]) -> str:
        """Upload DICOM files over REST; returns the Orthanc id of their series."""
        series = ""
        for f in files:
            series = json.loads(self._call("POST", "/instances", f.read_bytes(), "application/dicom"))["ParentSeries"]
        return series

    def push(self, series_id: str, modality: str) -> None:
        """Have Orthanc C-STORE a series to one of its modalities (as a PACS forwards to a node)."""
        self.post(f"/modalities/{modality}/store", {"Resources": [series_id], "Synchronous": True})

    def segs(self) -> list[bytes]:
        """Every SEG instance Orthanc holds, as DICOM file bytes."""
        ids = self.post("/tools/find", {"Level": "Instance", "Query": {"Modality": "SEG"}})
        return [self._call("GET", f"/instances/{i}/file") for i in ids]

    def __enter__(self) -> "Orthanc":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
