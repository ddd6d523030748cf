"""Run Python code in a child process where torch and the other training-only libraries cannot be imported."""

from __future__ import annotations

import subprocess
import sys

#: What device software never has: importing any of these in the child raises ImportError.
BLOCKED = ("torch", "nncf", "torch_pruning", "tensorrt", "onnxslim")

_PRELUDE = (
    "import sys, importlib.abc\n"
    "class Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    f"        if name.split('.')[0] in {BLOCKED!r}:\n"
    "            raise ImportError('blocked: ' + name)\n"
    "sys.meta_path.insert(0, Block())\n"
)


def run_without_torch(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `code` (with `args` as sys.argv[1:]) under the import block; returns the finished process."""
    return subprocess.run([sys.executable, "-c", _PRELUDE + code, *args], capture_output=True, text=True,
                          timeout=120)
