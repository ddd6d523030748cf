"""Fixtures for the DICOM node: a real Orthanc, the node as a real subprocess, small CT series, a bundle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _orthanc import Orthanc, free_port, missing_reason  # noqa: E402

pytest.importorskip("pynetdicom", reason="the node needs pynetdicom: pip install 'edgemed[serve]'")
pytest.importorskip("dicomweb_client", reason="the node needs dicomweb-client: pip install 'edgemed[serve]'")

ROOT = Path(__file__).resolve().parents[2]
#: A tiny liver + spleen student (edgemed 0.1.0's compatibility asset): no distillation in these tests.
BUNDLE = ROOT / "tests" / "assets" / "release-0.1.0" / "liver.edgemed"
SENTINEL_NAME, SENTINEL_ID = "ZZSENTINEL^QUUXPATIENT", "SENTINEL-ID-4711"
NODE_AET = "EDGEMED"


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    node_port = free_port()
    pacs = Orthanc(tmp_path / "pacs", modalities={"node": (NODE_AET, node_port)})
    pacs.node_port = node_port  # type: ignore[attr-defined]
    pacs.start()
    yield pacs
    pacs.stop(discard=True)


@pytest.fixture(scope="session")
def dcmqi_ct(real_data: Path) -> Path:
    return real_data / "dcmqi_ct3slice" / "ct"


@pytest.fixture(scope="session")
def training_series(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 axial slices of the training CT (the liver's height), as a DICOM series with sentinel identifiers."""
    from pydicom.uid import generate_uid

    from edgemed.io import Volume, read_volume
    from edgemed.serve import write_ct_series

    ct = read_volume(real_data / "totalseg" / "example_ct.nii.gz")
    k0 = 40
    affine = ct.affine.copy()
    affine[:3, 3] = ct.affine[:3, :3] @ [0, 0, k0] + ct.affine[:3, 3]
    crop = Volume(ct.array[:, :, k0:k0 + 24].copy(), affine, modality="CT")
    folder = tmp_path_factory.mktemp("train_series")
    write_ct_series(crop, folder, study_uid=generate_uid(), series_uid=generate_uid(), patient_name=SENTINEL_NAME,
                    patient_id=SENTINEL_ID, series_description="ABD LIVER")
    return folder


@pytest.fixture(scope="session")
def bundle(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A liver student distilled for a few seconds on the training CT (6 mm; about accuracy it proves nothing,
    but its masks are neither empty nor full, so comparing them means something); without torch, the
    0.1.0 phantom bundle (which labels most of a real CT as spleen)."""
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        return BUNDLE
    from edgemed.artifacts import PreprocessSpec
    from edgemed.compress import DistillConfig, distill
    from edgemed.export import to_onnx

    root = tmp_path_factory.mktemp("serve_bundle")
    config = DistillConfig(organs=("liver",), epochs=4, student="unet2d", student_kwargs={"widths": [8, 16, 32]},
                           batch_size=8, lr=1e-2, threads=1, ema_decay=None,
                           preprocess=PreprocessSpec(spacing_mm=(6.0, 6.0), context_slices=1, pad_multiple=4))
    with warnings.catch_warnings():  # one scan: its validation Dice is said to mean little; it is not used here
        warnings.simplefilter("ignore")
        student = distill([real_data / "totalseg" / "example_ct.nii.gz"], config, root / "student",
                          teacher_predictions=[real_data / "totalseg" / "example_seg_fast_force_split.nii.gz"],
                          progress=False)
    return to_onnx(student, root / "liver.edgemed").path


class Node:
    """`python -m edgemed serve CONFIG` as a subprocess, with its stderr in node.log."""

    def __init__(self, root: Path, *, output: str, pacs: Orthanc, bundle: Path = BUNDLE, dimse: bool = True,
                 dicomweb: bool = False,
                 organs: tuple[str, ...] = (), allowed: tuple[str, ...] = ("ORTHANC", "TESTSCU"),
                 extra_output: str = "", keep_images: bool = False,
                 dimse_tls: tuple[Path, Path, Path] | None = None) -> None:
        self.root = root
        self.folder = root / "node"
        self.http_port = free_port()
        self.dimse_port = getattr(pacs, "node_port", free_port())
        self.log = root / "node.log"
        out = (f'kind = "dimse"\nhost = "127.0.0.1"\nport = {pacs.dicom_port}\nae_title = "{pacs.aet}"\n'
               if output == "dimse" else f'kind = "dicomweb"\nurl = "{pacs.dicomweb}"\n')
        text = f"""
[node]
folder = "node"
quiet_period_s = 1.0
threads = 1
keep_images = {str(keep_images).lower()}

[[bundles]]
name = "liver"
path = "{bundle}"

[[routes]]
bundle = "liver"
modality = "CT"
organs = {json.dumps(list(organs))}

[output]
{out}retry_initial_s = 0.5
retry_max_s = 2.0
{extra_output}
[http]
port = {self.http_port}
"""
        if dimse:
            text += (f'\n[inputs.dimse]\nport = {self.dimse_port}\nae_title = "{NODE_AET}"\n'
                     f"allowed_ae_titles = {json.dumps(list(allowed))}\n")
            if dimse_tls is not None:
                cert, key, ca = dimse_tls
                text += f'tls = {{ cert = "{cert}", key = "{key}", ca = "{ca}" }}\n'
        if dicomweb:
            text += f'\n[inputs.dicomweb]\nurl = "{pacs.dicomweb}"\npoll_interval_s = 0.5\n'
        self.config = root / "node.toml"
        root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(text)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> "Node":
        env = {**os.environ, "EDGEMED_THREADS": "1"}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "edgemed", "serve", str(self.config)], stdout=log,
                                         stderr=log, env=env, cwd=self.root)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the node exited:\n{self.log.read_text()}"
            try:
                self.http("/healthz")
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"the node did not come up:\n{self.log.read_text()}")

    def http(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
            return r.read().decode()

    def status(self) -> dict:
        """What `edgemed serve --status --json` prints (read in-process: polled often)."""
        from edgemed.serve import node_status

        return node_status(str(self.folder)) if (self.folder / "queue.sqlite").exists() else {"states": {}}

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def node_factory(tmp_path: Path, bundle: Path) -> Iterator:
    nodes: list[Node] = []

    def make(**kwargs: object) -> Node:
        kwargs.setdefault("bundle", bundle)
        node = Node(tmp_path / f"node{len(nodes)}", **kwargs)  # type: ignore[arg-type]
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()


def wait_for(predicate, timeout_s: float, what: str, node: Node | None = None):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    log = node.log.read_text() if node is not None and node.log.exists() else ""
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{log}")


def send_series(files: list[Path], port: int, *, calling_aet: str = "TESTSCU") -> list[int]:
    """C-STORE files to the node with pynetdicom; returns each status (empty: association refused)."""
    import pydicom
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    ae = AE(ae_title=calling_aet)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
    try:
        if not assoc.is_established:
            return []
        return [int(assoc.send_c_store(pydicom.dcmread(f)).Status) for f in files]
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()  # closes the association's socket, also of one refused
