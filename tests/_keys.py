"""Signing key pairs for tests: "release" (trusted) and "other" (not)."""

from __future__ import annotations

from pathlib import Path


def make_keys(root: Path) -> dict[str, Path]:
    """Write release/other ed25519 key pairs under `root`: {"release", "release_pub", "other", "other_pub"}."""
    from edgemed.artifacts import generate_keypair

    out = {}
    for name in ("release", "other"):
        generate_keypair(root / f"{name}.pem", root / f"{name}.pub.pem")
        out[name], out[f"{name}_pub"] = root / f"{name}.pem", root / f"{name}.pub.pem"
    return out
