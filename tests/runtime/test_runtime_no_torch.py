"""Device software: the runtime (and export's import) work in a process where torch cannot be imported."""

from __future__ import annotations

import subprocess
import sys

from edgemed.runtime import OnnxBundle

_BLOCK_TORCH = (
    "import sys, importlib.abc\n"
    "class Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'nncf', 'torch_pruning', 'tensorrt', 'onnxslim'):\n"
    "            raise ImportError('blocked: ' + name)\n"
    "sys.meta_path.insert(0, Block())\n"
)


def test_runtime_segments_without_torch(phantom_bundle: OnnxBundle) -> None:
    code = _BLOCK_TORCH + (
        "import edgemed.runtime, edgemed.export, edgemed.runtime.backends.ort, edgemed.runtime.backends.openvino\n"
        "from edgemed.runtime import load\n"
        "from edgemed.phantom import PhantomConfig, make_phantom\n"
        "ct, _ = make_phantom(3, PhantomConfig(shape=(40, 32, 12), spacing_mm=(8.0, 8.0, 10.0)))\n"
        "for backend in ('ort', 'openvino'):\n"
        "    with load(sys.argv[1], backend=backend, threads=1) as seg:\n"
        "        assert seg.segment(ct).shape == ct.shape\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'onnxslim', 'onnx')]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(phantom_bundle.path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
