"""Measure what `pip install edgemed` puts on disk: a fresh venv with the base ([runtime]) install, and with --all
also one with edgemed[all] (what scripts/install.sh installs). Writes benchmarks/results/install_size.json.

    .venv/bin/python scripts/install_size.py            # runtime only (~30 s)
    .venv/bin/python scripts/install_size.py --all      # plus edgemed[all] (a few minutes)

Each venv is built from a copy of pyproject.toml, README.md and src/ (so the wheel build writes nothing into this
checkout), with pip's own configuration and cache. tests/test_install_runtime.py uses the same helpers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: What a runtime install must not contain (distribution names, normalised).
TRAINING_ONLY = ("torch", "nncf", "torch-pruning", "openvino", "matplotlib", "onnx", "onnxscript", "onnxslim")
#: pip output that means the package index could not be reached (not that the requirements are wrong).
UNREACHABLE = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
               "Network is unreachable", "Max retries exceeded", "ConnectTimeoutError", "ProxyError",
               "Could not fetch URL", "connection broken")


def copy_source(dest: Path) -> Path:
    """Copy what a wheel build reads (pyproject.toml, README.md, src/) to `dest`; returns `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


def clean_env() -> dict[str, str]:
    """This process's environment minus what would leak the current venv into a child."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def build_venv(venv_dir: Path, requirement: str, *, constraints: Path | None = None,
               timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
    """Create a fresh venv (no system site-packages) at `venv_dir` and pip-install `requirement` into it.

    Returns:
        The finished pip process (check returncode; stdout holds pip's output and errors).
    """
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(venv_dir)
    cmd = [str(venv_dir / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
           "--retries", "2", "--timeout", "60"]
    if constraints is not None:
        cmd += ["-c", str(constraints)]
    return subprocess.run([*cmd, requirement], capture_output=True, text=True, timeout=timeout_s, env=clean_env(),
                          stdin=subprocess.DEVNULL)


def unreachable(output: str) -> bool:
    """Whether pip's `output` says the package index could not be reached."""
    return any(marker.lower() in output.lower() for marker in UNREACHABLE)


def site_packages(venv_dir: Path) -> Path:
    """The venv's site-packages folder."""
    return next((venv_dir / "lib").glob("python3*/site-packages"))


def disk_mib(path: Path) -> float:
    """Disk usage of `path` in MiB, as `du -sk` counts it."""
    done = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[0]) / 1024


def installed(venv_dir: Path) -> dict[str, str]:
    """{distribution name (normalised): version} of everything installed in the venv."""
    code = ("import importlib.metadata as m, json\n"
            "print(json.dumps({d.metadata['Name'].lower().replace('_', '-'): d.version for d in m.distributions()}))")
    done = subprocess.run([str(venv_dir / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True,
                          env=clean_env())
    return dict(sorted(json.loads(done.stdout).items()))


def measure(venv_dir: Path, requirement: str, *, constraints: Path | None = None) -> dict[str, object]:
    """Build one venv and return its sizes and what it holds; raises RuntimeError with pip's output on failure."""
    done = build_venv(venv_dir, requirement, constraints=constraints)
    if done.returncode != 0:
        raise RuntimeError(f"pip install {requirement} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    dists = installed(venv_dir)
    sp = site_packages(venv_dir)
    return {"venv_mib": round(disk_mib(venv_dir), 1), "site_packages_mib": round(disk_mib(sp), 1),
            "training_only_installed": [d for d in TRAINING_ONLY if d in dists],
            "largest_mib": _largest(sp), "distributions": dists}


def _largest(sp: Path, n: int = 8) -> dict[str, float]:
    sizes = {p.name: disk_mib(p) for p in sp.iterdir() if p.is_dir() and not p.name.endswith(".dist-info")}
    return {k: round(v, 1) for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:n]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="also measure a venv with edgemed[all] (torch included)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "install_size.json")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _results import config_from_args, write_result  # noqa: E402

    metrics: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="edgemed-install-size-") as tmp:
        src = copy_source(Path(tmp) / "src")
        runs = {"runtime": (str(src), None)}
        if args.all:
            runs["all"] = (f"{src}[all]", ROOT / "constraints.txt")
        for name, (requirement, constraints) in runs.items():
            metrics[name] = m = measure(Path(tmp) / name, requirement, constraints=constraints)
            print(f"{name}: venv {m['venv_mib']} MiB, site-packages {m['site_packages_mib']} MiB", file=sys.stderr)
    out = write_result(args.out, benchmark="install_size", script=__file__,
                       config=config_from_args(args, runtime_install="pip install edgemed (base = [runtime]), fresh venv",
                                               all_install="pip install -c constraints.txt 'edgemed[all]', fresh venv",
                                               size_unit="du -sk, MiB"),
                       metrics=metrics)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
