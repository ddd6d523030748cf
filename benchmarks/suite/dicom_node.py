"""The DICOM node (`edgemed serve`) under a burst, against a real Orthanc: latency, throughput, memory,
kill -9 recovery, a PACS outage, and no identifier in logs or metrics.

A burst of N CT series (the training CT, ../shared/data/totalseg/example_ct.nii.gz, written as DICOM
under N new study UIDs with sentinel patient names and IDs) is uploaded to Orthanc (Debian package +
DICOMweb plugin, throw-away storage, loopback ports), which forwards each series to the node by
C-STORE (as a PACS routes studies to a node); the node sends each SEG back by C-STORE. Three runs:

    burst    time from a series' last instance acknowledged by the node to its SEG in Orthanc
             (median, p90), series per minute, node peak RSS (VmHWM)
    kill9    the same burst, the node killed with -9 at --kills random moments and restarted at
             once (a forward interrupted by the kill is re-sent, as a PACS retries): N SEGs, exactly
             one per study, and an empty queue at the end
    outage   the series sent straight to the node (pynetdicom, as a scanner would), Orthanc stopped
             for --down-s seconds in the middle of the burst: all SEGs delivered after it returns

Then the node's logs (stderr), /metrics and `edgemed serve --status` of every run are searched for the
sentinels and the study/series UIDs. The node runs with EDGEMED_THREADS=1; the machine's load average
is recorded, since the 2 cores are shared.

The bundle: a liver student (runs/segment_memory/liver.edgemed, copied to runs/dicom_node/ on first use;
if neither exists, distilled here for 3 epochs on the training CT and exported to runs/dicom_node/).

    .venv/bin/python benchmarks/suite/dicom_node.py [--series 20] [--crop 0] [--kills 3] [--down-s 60]

Writes benchmarks/results/dicom_node.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import DATA, RESULTS, ROOT, config_from_args, write_result  # noqa: E402

sys.path.insert(0, str(ROOT / "tests" / "serve"))
from _orthanc import Orthanc, free_port, missing_reason  # noqa: E402

OUT = RESULTS / "dicom_node.json"
RUNS = ROOT / "runs" / "dicom_node"
CT = DATA / "totalseg" / "example_ct.nii.gz"
SEG = DATA / "totalseg" / "example_seg_fast_force_split.nii.gz"
NODE_AET = "EDGEMED"


def _bundle() -> tuple[Path, str]:
    """The liver bundle and where it came from (kept in runs/dicom_node/ORIGIN.txt)."""
    target, note = RUNS / "liver.edgemed", RUNS / "ORIGIN.txt"
    if target.is_dir():
        return target, note.read_text().strip() if note.is_file() else "found in runs/dicom_node/"
    RUNS.mkdir(parents=True, exist_ok=True)
    source = ROOT / "runs" / "segment_memory" / "liver.edgemed"
    if source.is_dir():
        shutil.copytree(source, target)
        origin = f"copied from {source.relative_to(ROOT)} (segment_memory.py's liver student)"
    else:
        subprocess.run([sys.executable, "-m", "edgemed", "distill", "--scans", str(CT), "--teacher-predictions",
                        str(SEG), "--organ", "liver", "--epochs", "3", "--out", str(RUNS / "student")], check=True,
                       env={**os.environ, "EDGEMED_THREADS": "1"})
        subprocess.run([sys.executable, "-m", "edgemed", "export", str(RUNS / "student"), "--out", str(target)],
                       check=True)
        origin = "distilled here: edgemed distill --organ liver --epochs 3 on the training CT, then exported"
    note.write_text(origin + "\n")
    return target, origin


def _series(root: Path, n: int, crop: int) -> list[dict]:
    """N copies of the training CT as DICOM, each under a new study and series UID and its own sentinels."""
    from pydicom.uid import generate_uid

    from edgemed.io import Volume, read_volume
    from edgemed.serve import write_ct_series

    ct = read_volume(CT)
    if crop:
        k0 = max(0, (ct.shape[2] - crop) // 2)
        affine = ct.affine.copy()
        affine[:3, 3] = ct.affine[:3, :3] @ [0, 0, k0] + ct.affine[:3, 3]
        ct = Volume(ct.array[:, :, k0:k0 + crop].copy(), affine, modality="CT")
    out = []
    for i in range(n):
        study, series = generate_uid(), generate_uid()
        name, pid = f"ZZSENTINEL{i:02d}^QUUXPATIENT", f"SENTINEL-ID-{4700 + i}"
        files = write_ct_series(ct, root / f"s{i:02d}", study_uid=study, series_uid=series, patient_name=name,
                                patient_id=pid, series_description="ABD CT")
        out.append({"files": files, "study": study, "series": series, "secrets": [name, pid, "ZZSENTINEL",
                                                                                   "QUUXPATIENT", study, series]})
    return out


class _Node:
    def __init__(self, root: Path, bundle: Path, pacs: Orthanc, dimse_port: int, quiet_s: float) -> None:
        self.root, self.folder, self.log = root, root / "node", root / "node.log"
        self.http_port = free_port()
        self.config = root / "node.toml"
        root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(f"""[node]
folder = "node"
quiet_period_s = {quiet_s}
threads = 1

[[bundles]]
name = "liver"
path = "{bundle}"

[[routes]]
bundle = "liver"
modality = "CT"

[inputs.dimse]
port = {dimse_port}
ae_title = "{NODE_AET}"
allowed_ae_titles = ["ORTHANC", "SCANNER"]

[output]
kind = "dimse"
host = "127.0.0.1"
port = {pacs.dicom_port}
ae_title = "{pacs.aet}"
retry_initial_s = 1
retry_max_s = 8

[http]
port = {self.http_port}
""")
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_rss_mib = 0.0

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "edgemed", "serve", str(self.config)], stdout=log,
                                         stderr=log, env={**os.environ, "EDGEMED_THREADS": "1"}, cwd=self.root)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                self.http("/healthz")
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the node did not come up in 120 s; see {self.log}")

    def http(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
            return r.read().decode()

    def sample_rss(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_mib = max(self.peak_rss_mib, int(line.split()[1]) / 1024)
        except OSError:
            pass

    def kill9(self) -> None:
        assert self.proc is not None
        self.sample_rss()
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.sample_rss()
            self.proc.terminate()
            self.proc.wait(30)

    def status_text(self) -> str:
        return subprocess.run([sys.executable, "-m", "edgemed", "serve", "--status", "--json", str(self.config)],
                              capture_output=True, text=True, check=True).stdout


def _seg_arrivals(pacs: Orthanc, studies: dict[str, int], seen: dict[int, float]) -> None:
    """Note when each study's SEG first shows in Orthanc."""
    try:
        found = pacs.post("/tools/find", {"Level": "Series", "Query": {"Modality": "SEG"}, "Expand": True})
    except (OSError, urllib.error.URLError):
        return
    now = time.time()
    for s in found:
        i = studies.get(s["ParentStudy"])
        if i is not None and i not in seen:
            seen[i] = now


def _outage_studies(pacs: Orthanc, series: list[dict], studies: dict[str, int]) -> None:
    by_uid = {s["study"]: i for i, s in enumerate(series)}
    try:
        found = pacs.post("/tools/find", {"Level": "Study", "Query": {}, "Expand": True})
    except (OSError, urllib.error.URLError):
        return
    for st in found:
        i = by_uid.get(st["MainDicomTags"].get("StudyInstanceUID"))
        if i is not None:
            studies[st["ID"]] = i


def _exactly_once(pacs: Orthanc, studies: dict[str, int]) -> dict[str, int]:
    counts = {}
    for oid, i in studies.items():
        segs = [s for s in pacs.get(f"/studies/{oid}/series") if s["MainDicomTags"].get("Modality") == "SEG"]
        counts[str(i)] = sum(len(s["Instances"]) for s in segs)
    return counts


def _scu_send(files: list[Path], port: int) -> bool:
    import pydicom
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
    if not assoc.is_established:
        return False
    try:
        return all(int(assoc.send_c_store(pydicom.dcmread(f)).Status) == 0 for f in files)
    finally:
        assoc.release()


def _run(mode: str, root: Path, bundle: Path, series: list[dict], args: argparse.Namespace) -> dict:
    dimse_port = free_port()
    pacs = Orthanc(root / "pacs", modalities={"node": (NODE_AET, dimse_port)}).start()
    node = _Node(root, bundle, pacs, dimse_port, args.quiet_s)
    studies: dict[str, int] = {}
    if mode != "outage":
        for i, s in enumerate(series):  # on the PACS first; the burst is the forwarding
            sid = pacs.upload(s["files"])
            studies[pacs.get(f"/series/{sid}")["ParentStudy"]] = i
    node.start()
    last_instance: dict[int, float] = {}
    seen: dict[int, float] = {}
    resent = [0]
    loads = [os.getloadavg()[0]]

    def send() -> None:
        for i, s in enumerate(series):
            while True:
                try:
                    if mode == "outage":
                        ok = _scu_send(s["files"], dimse_port)
                    else:
                        pacs.push(next(o for o, j in studies.items() if j == i), "node")
                        ok = True
                except (OSError, urllib.error.URLError):
                    ok = False
                if ok:
                    last_instance[i] = time.time()
                    break
                resent[0] += 1  # the node was down mid-series: send the series again, as a PACS retries
                time.sleep(0.5)

    t0 = time.time()
    sender = threading.Thread(target=send)
    sender.start()
    kills = sorted(random.Random(args.seed).uniform(2, args.kill_window_s) for _ in range(args.kills)) \
        if mode == "kill9" else []
    down_at = None
    outage = {"down_s": 0.0}
    deadline = t0 + args.timeout_s
    while time.time() < deadline:
        elapsed = time.time() - t0
        node.sample_rss()
        loads.append(os.getloadavg()[0])
        if kills and elapsed >= kills[0]:
            kills.pop(0)
            node.kill9()
            node.start()
        if mode == "outage" and down_at is None and len(last_instance) >= max(1, len(series) // 3):
            pacs.stop()
            down_at = time.time()
        if down_at is not None and pacs.proc is None and time.time() - down_at >= args.down_s:
            pacs.start()
            outage["down_s"] = time.time() - down_at
            outage["segs_before_down"] = len(seen)
        if pacs.proc is not None:
            if mode == "outage":  # the series went straight to the node: a study shows in Orthanc with its SEG
                _outage_studies(pacs, series, studies)
            _seg_arrivals(pacs, studies, seen)
        if len(seen) == len(series) and not sender.is_alive() and not kills:
            break
        time.sleep(0.25)
    sender.join(timeout=5)
    time.sleep(1.0)
    status = json.loads(node.status_text())
    texts = [node.http("/metrics"), node.status_text()]
    node.stop()
    texts.append(node.log.read_text())
    once = _exactly_once(pacs, studies)
    pacs.stop()
    lat = [seen[i] - last_instance[i] for i in seen if i in last_instance]
    secrets = [x for s in series for x in s["secrets"]]
    leaks = sorted({x for x in secrets for t in texts if x in t})
    span = (max(seen.values()) - t0) if seen else None
    result = {
        "series": len(series), "segs_in_orthanc": len(seen),
        "seg_instances_per_study": sorted(set(once.values())), "all_exactly_once": all(v == 1 for v in once.values())
        and len(once) == len(series),
        "queue_length_after": status["queue_length"], "states_after": status["states"],
        "latency_last_instance_to_seg_s": {"median": float(np.median(lat)) if lat else None,
                                           "p90": float(np.percentile(lat, 90)) if lat else None,
                                           "max": max(lat) if lat else None},
        "series_per_minute": len(seen) / span * 60 if span else None, "wall_s": span,
        "node_peak_rss_mib": round(node.peak_rss_mib, 1),
        "delivery_failures": status["failures"]["delivery"], "segment_failures": status["failures"]["segment"],
        "series_resent_by_sender": resent[0], "loadavg_1min": {"min": min(loads), "max": max(loads),
                                                                "mean": float(np.mean(loads))},
        "sentinels_or_uids_in_logs_or_metrics": len(leaks),
        "log_lines": len(texts[-1].splitlines()),
    }
    if mode == "kill9":
        result["kills"] = args.kills
        result["node_restarts_logged"] = texts[-1].count("node up:") - 1
    if mode == "outage":
        result["outage"] = outage
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=20, help="Series in the burst.")
    parser.add_argument("--crop", type=int, default=0, help="Keep this many central slices (0: all 112).")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--kill-window-s", type=float, default=60.0, help="The kills fall in [2 s, this].")
    parser.add_argument("--down-s", type=float, default=60.0, help="How long Orthanc is down in the outage run.")
    parser.add_argument("--quiet-s", type=float, default=2.0, help="The node's quiet period.")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="Per run.")
    parser.add_argument("--runs", nargs="+", default=["burst", "kill9", "outage"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    reason = missing_reason()
    if reason:
        sys.exit(f"error: {reason}")
    from edgemed.artifacts import open_bundle

    bundle, origin = _bundle()
    load_start = os.getloadavg()
    metrics: dict = {}
    with tempfile.TemporaryDirectory(prefix="dicom_node_") as tmp:
        series = _series(Path(tmp) / "series", args.series, args.crop)
        for mode in args.runs:
            print(f"{mode} ...", flush=True)
            metrics[mode] = _run(mode, Path(tmp) / mode, bundle, series, args)
            print(json.dumps(metrics[mode], indent=2), flush=True)
    metrics["loadavg_at_start"] = load_start
    metrics["loadavg_at_end"] = os.getloadavg()
    slices = args.crop or 112
    write_result(args.out, benchmark="dicom_node", script=__file__,
                 config=config_from_args(args, bundle=str(bundle.relative_to(ROOT)), bundle_origin=origin,
                                         bundle_digest=open_bundle(bundle).manifest.digest,
                                         series_shape=[122, 101, slices], edgemed_threads=1,
                                         orthanc=subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "orthanc"],
                                                                capture_output=True, text=True).stdout,
                                         cpu_count=os.cpu_count()),
                 metrics=metrics)


if __name__ == "__main__":
    main()
