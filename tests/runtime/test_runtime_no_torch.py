"""Device software: the runtime (and export's import) work in a process where torch cannot be imported."""

from __future__ import annotations

from _no_torch import run_without_torch
from edgemed.runtime import OnnxBundle


def test_runtime_segments_without_torch(phantom_bundle: OnnxBundle) -> None:
    result = run_without_torch(
        "import edgemed.runtime, edgemed.export, edgemed.runtime.backends.ort, edgemed.runtime.backends.openvino\n"
        "from edgemed.runtime import load\n"
        "from edgemed.phantom import PhantomConfig, make_phantom\n"
        "ct, _ = make_phantom(3, PhantomConfig(shape=(40, 32, 12), spacing_mm=(8.0, 8.0, 10.0)))\n"
        "for backend in ('ort', 'openvino'):\n"
        "    with load(sys.argv[1], backend=backend, threads=1) as seg:\n"
        "        assert seg.segment(ct).shape == ct.shape\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'onnxslim', 'onnx')]\n"
        "assert not heavy, heavy\n",
        str(phantom_bundle.path),
    )
    assert result.returncode == 0, result.stderr
