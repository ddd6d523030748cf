"""Signed artifacts: an ed25519 signature over manifest.json, which holds the sha256 of every file.

The chain of trust is one hop long: the signature covers the manifest's exact bytes, and the
manifest covers every payload file by sha256, so a bundle verified against a trusted public key
cannot have had a single byte changed, added or removed since it was signed. The signature lives
beside the manifest in ``signature.json`` (it cannot be inside what it signs).

Keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo public), what `openssl genpkey -algorithm
ed25519` writes too. Stdlib + `cryptography` only: device software verifies without torch.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgemed._atomic import atomic_file
from edgemed.artifacts._manifest import MANIFEST, SIGNATURE, Manifest, parse_manifest, read_manifest, read_manifest_bytes
from edgemed.errors import ArtifactError, ConfigError, MissingDependencyError

__all__ = ["SIGNATURE", "TRUSTED_KEYS_ENV", "Verification", "generate_keypair", "key_id", "load_public_keys",
           "sign_artifact", "trusted_keys_from_env", "verify_artifact"]

TRUSTED_KEYS_ENV = "EDGEMED_TRUSTED_KEYS"
PASSPHRASE_ENV = "EDGEMED_KEY_PASSPHRASE"
_ALGORITHM = "ed25519"


@dataclass(frozen=True)
class Verification:
    """What `verify_artifact` established.

    Attributes:
        path: The artifact directory.
        manifest: Its manifest (every payload file's sha256 checked).
        signed: A signature file is present.
        key_id: The id of the trusted key that verified the signature, or None.
    """

    path: Path
    manifest: Manifest
    signed: bool
    key_id: str | None

    def summary(self) -> str:
        """One line for the CLI."""
        files = f"{len(self.manifest.files)} file(s) match their sha256"
        if self.key_id:
            return f"{self.path}: OK, signature by key {self.key_id} verified; {files}."
        if self.signed:
            return f"{self.path}: OK ({files}); signed, but no trusted key was given, so the signature was not checked."
        return f"{self.path}: OK ({files}); not signed."


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as err:
        raise MissingDependencyError(
            "signing and signature checks need the 'cryptography' package: pip install cryptography"
        ) from err
    return serialization, ed25519


def key_id(public_key: Any) -> str:
    """A short, stable id of a public key: the first 16 hex digits of sha256 of its raw 32 bytes."""
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(private_path: str | os.PathLike[str], public_path: str | os.PathLike[str], *,
                     passphrase: bytes | None = None, overwrite: bool = False) -> str:
    """Write a new ed25519 key pair as PEM files (the private one readable by its owner only).

    Args:
        passphrase: Encrypt the private key with it (default: `EDGEMED_KEY_PASSPHRASE` if set).
        overwrite: Replace existing files; off by default so a key is never lost by accident.

    Returns:
        The key id.

    Raises:
        ConfigError: A file exists and overwrite is off.
    """
    serialization, ed25519 = _crypto()
    private_path, public_path = Path(private_path), Path(public_path)
    for path in (private_path, public_path):
        if path.exists() and not overwrite:
            raise ConfigError(f"{path} exists; refusing to overwrite a key. Choose another path or pass --overwrite.")
    if passphrase is None and os.environ.get(PASSPHRASE_ENV):
        passphrase = os.environ[PASSPHRASE_ENV].encode()
    key = ed25519.Ed25519PrivateKey.generate()
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    with atomic_file(private_path) as tmp:
        tmp.chmod(0o600)
        tmp.write_bytes(private_pem)
    with atomic_file(public_path) as tmp:
        tmp.write_bytes(public_pem)
    return key_id(key.public_key())


def _load_private_key(path: Path, passphrase: bytes | None) -> Any:
    serialization, ed25519 = _crypto()
    if passphrase is None and os.environ.get(PASSPHRASE_ENV):
        passphrase = os.environ[PASSPHRASE_ENV].encode()
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read the private key {path}: {err.strerror or err}.") from err
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError as err:
        raise ConfigError(f"{path} is encrypted; set {PASSPHRASE_ENV} to its passphrase." if passphrase is None
                          else f"{path} is not encrypted, but a passphrase was given ({err}).") from err
    except ValueError as err:
        raise ConfigError(f"{path} is not a readable PEM private key, or the passphrase is wrong ({err}). "
                          "Create one with: edgemed keygen --private KEY.pem --public KEY.pub.pem") from err
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{path} is a {type(key).__name__}; edgemed signs with ed25519 keys only "
                          "(edgemed keygen, or openssl genpkey -algorithm ed25519).")
    return key


def load_public_keys(paths: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """Public keys by key id, from PEM files or directories of `*.pem` / `*.pub` files.

    Raises:
        ConfigError: A path is missing, or a file is not an ed25519 public key.
    """
    serialization, ed25519 = _crypto()
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            # A directory of trusted keys: its public keys (a private key there is skipped, not trusted).
            files += sorted(f for f in p.iterdir() if f.suffix in (".pem", ".pub") and f.is_file()
                            and b"PRIVATE KEY" not in f.read_bytes()[:64])
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"trusted key {p} does not exist.")
    keys: dict[str, Any] = {}
    for f in files:
        try:
            key = serialization.load_pem_public_key(f.read_bytes())
        except (ValueError, OSError) as err:
            raise ConfigError(f"{f} is not a PEM public key ({err}). Give the .pub.pem file from edgemed keygen, "
                              "not the private key.") from err
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ConfigError(f"{f} is a {type(key).__name__}; edgemed verifies ed25519 signatures only.")
        keys[key_id(key)] = key
    if not keys:
        raise ConfigError(f"no public key found in {', '.join(map(str, paths))}.")
    return keys


def trusted_keys_from_env() -> list[Path]:
    """The key files or directories named by `EDGEMED_TRUSTED_KEYS` (os.pathsep-separated), if set.

    Raises:
        ConfigError: The variable is set but names no path: a device meant to check signatures
            must not silently stop checking because its key list came out empty.
    """
    value = os.environ.get(TRUSTED_KEYS_ENV)
    if value is None:
        return []
    paths = [Path(p.strip()) for p in value.split(os.pathsep) if p.strip()]
    if not paths:
        raise ConfigError(f"{TRUSTED_KEYS_ENV} is set but empty; name the trusted public key file(s) or "
                          f"directory ({os.pathsep}-separated), or unset it to run without signature checks.")
    return paths


def sign_artifact(path: str | os.PathLike[str], private_key: str | os.PathLike[str], *,
                  passphrase: bytes | None = None) -> str:
    """Sign an artifact directory: verify every file against its manifest, then write signature.json.

    Returns:
        The signing key's id.

    Raises:
        ArtifactError: The artifact is damaged (a file missing, altered or not in the manifest),
            so it is not signed.
        ConfigError: The key cannot be read.
    """
    root = Path(path)
    _refuse_unlisted(root, read_manifest(root))
    key = _load_private_key(Path(private_key), passphrase)
    manifest_bytes = (root / MANIFEST).read_bytes()
    record: dict[str, str] = {
        "algorithm": _ALGORITHM,
        "key_id": key_id(key.public_key()),
        "signed_file": MANIFEST,
        "signed_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "signed_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    record["signature"] = base64.b64encode(key.sign(_message(record, manifest_bytes))).decode()
    with atomic_file(root / SIGNATURE) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return str(record["key_id"])


def verify_artifact(path: str | os.PathLike[str], *,
                    trusted_keys: Sequence[str | os.PathLike[str]] | dict[str, Any] | None = None,
                    require_signature: bool | None = None, kind: str | None = None) -> Verification:
    """Check an artifact before use: every file's sha256, no unlisted file, and its signature.

    Args:
        trusted_keys: Public key files/directories (or loaded keys by id). None: those named by
            `EDGEMED_TRUSTED_KEYS`, if set.
        require_signature: Refuse an artifact without a valid signature by a trusted key. None:
            required exactly when trusted keys are given (argument or environment).
        kind: The artifact kind expected, or None for any.

    Raises:
        ArtifactError: A file is missing, altered or not covered by the manifest; the signature is
            missing, malformed, by an untrusted key or does not match.
        ConfigError: Signature required but no trusted key given, or a key cannot be read.
    """
    root = Path(path)
    if trusted_keys is None:
        env = trusted_keys_from_env()
        trusted_keys = env or None
    keys = (trusted_keys if isinstance(trusted_keys, dict)
            else load_public_keys(trusted_keys) if trusted_keys else {})
    if require_signature is None:
        require_signature = bool(keys)
    if require_signature and not keys:
        raise ConfigError(f"a signature is required but no trusted public key was given; pass --key PUB.pem or set "
                          f"{TRUSTED_KEYS_ENV}.")
    # manifest.json is read once: the copy whose content hash and signature are checked is the copy
    # returned, so a manifest swapped on disk meanwhile is never the one used.
    manifest_bytes = read_manifest_bytes(root)
    manifest = parse_manifest(root, manifest_bytes, kind=kind)
    _refuse_unlisted(root, manifest)
    sig_path = root / SIGNATURE
    signed = sig_path.is_file()
    if not signed:
        if require_signature:
            raise ArtifactError(f"{root} is not signed, and a signature by a trusted key is required. Sign it where "
                                f"it was made: edgemed sign {root} --key PRIVATE.pem")
        return Verification(root, manifest, False, None)
    if not keys:
        return Verification(root, manifest, True, None)
    return Verification(root, manifest, True, _check_signature(root, sig_path, keys, manifest_bytes))


def _message(record: dict[str, Any], manifest_bytes: bytes) -> bytes:
    """What is signed: every field of the signature record but the signature, then the manifest's bytes."""
    fields = json.dumps({k: v for k, v in record.items() if k != "signature"}, sort_keys=True, separators=(",", ":"))
    return b"edgemed-signature-v1\n" + fields.encode() + b"\n" + manifest_bytes


def _check_signature(root: Path, sig_path: Path, keys: dict[str, Any], manifest_bytes: bytes) -> str:
    from cryptography.exceptions import InvalidSignature

    try:
        record = json.loads(sig_path.read_text())
        if not isinstance(record, dict):
            raise TypeError("not a JSON object")
        algorithm, kid = str(record["algorithm"]), str(record["key_id"])
        signature = base64.b64decode(str(record["signature"]), validate=True)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as err:
        raise ArtifactError(f"{sig_path} is malformed ({type(err).__name__}: {err}); the signature was altered or "
                            f"damaged. Refusing the artifact; get a correctly signed copy.") from err
    if algorithm != _ALGORITHM:
        raise ArtifactError(f"{sig_path}: algorithm {algorithm!r} is not supported (only {_ALGORITHM}); refusing.")
    if kid not in keys:
        raise ArtifactError(f"{root} is signed by key {kid}, which is not among the trusted keys "
                            f"({', '.join(sorted(keys))}). Refusing it; add that public key only if you trust "
                            "whoever holds it.")
    try:
        keys[kid].verify(signature, _message(record, manifest_bytes))
    except InvalidSignature as err:
        raise ArtifactError(f"{root}: the signature by key {kid} does not match {MANIFEST}; the manifest or the "
                            "signature was modified after signing. Refusing the artifact.") from err
    return kid


def _refuse_unlisted(root: Path, manifest: Manifest) -> None:
    """A signed manifest says nothing about files it does not list, so none may be there."""
    allowed = set(manifest.files) | {MANIFEST, SIGNATURE}
    extra = sorted(p.name for p in root.iterdir() if p.name not in allowed)
    if extra:
        raise ArtifactError(f"{root} holds file(s) not covered by its manifest: {', '.join(extra)}. An artifact holds "
                            "exactly the files its manifest lists; remove them or re-create the artifact.")
