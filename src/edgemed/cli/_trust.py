"""`edgemed keygen`, `edgemed sign` and `edgemed verify`: ed25519 signatures over artifact manifests."""

from __future__ import annotations

from pathlib import Path

import click

from edgemed.cli._options import overwrite_option

__all__ = ["keygen", "pack", "sign", "unpack", "verify"]


@click.command()
@click.option("--private", "private_path", required=True, type=click.Path(path_type=Path),
              help="Where to write the private key (PEM, mode 600). Keep it off the devices.")
@click.option("--public", "public_path", required=True, type=click.Path(path_type=Path),
              help="Where to write the public key (PEM): what devices trust.")
@click.option("--overwrite", is_flag=True, help="Replace existing key files.")
def keygen(private_path: Path, public_path: Path, overwrite: bool) -> None:
    """Create an ed25519 key pair for signing bundles (encrypted when EDGEMED_KEY_PASSPHRASE is set).

    \b
    Example:
      edgemed keygen --private keys/release.pem --public keys/release.pub.pem
    """
    from edgemed.artifacts import generate_keypair

    kid = generate_keypair(private_path, public_path, overwrite=overwrite)
    click.echo(f"key {kid}: private {private_path}, public {public_path}")
    click.echo(f"next: edgemed sign BUNDLE --key {private_path}")


@click.command()
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--key", "key_path", required=True, type=click.Path(path_type=Path), help="The private key (PEM).")
def sign(artifacts: tuple[Path, ...], key_path: Path) -> None:
    """Sign ARTIFACTS (bundles, engines, students) after checking every file against its manifest.

    \b
    Example:
      edgemed sign out/liver.edgemed --key keys/release.pem
    """
    from edgemed.artifacts import sign_artifact

    for path in artifacts:
        kid = sign_artifact(path, key_path)
        click.echo(f"{path}: signed by key {kid}")
    click.echo(f"next: edgemed verify {artifacts[0]} --key PUBLIC.pem")


@click.command()
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--trusted-key", "--key", "keys", multiple=True, type=click.Path(path_type=Path),
              help="A trusted public key file or directory (repeatable; default: $EDGEMED_TRUSTED_KEYS).")
@click.option("--require-signature/--no-require-signature", default=None,
              help="Fail on unsigned artifacts (default: exactly when a trusted key is given).")
def verify(artifacts: tuple[Path, ...], keys: tuple[Path, ...], require_signature: bool | None) -> None:
    """Check ARTIFACTS as the runtime does before loading: sha256 of every file, no extra file, signature.

    Exit status 1 when any artifact is refused.

    \b
    Example:
      edgemed verify out/liver.edgemed --key keys/release.pub.pem
    """
    from edgemed.artifacts import load_public_keys, verify_artifact
    from edgemed.errors import ArtifactError

    trusted = load_public_keys(keys) if keys else None
    failed = 0
    for path in artifacts:
        try:
            click.echo(verify_artifact(path, trusted_keys=trusted, require_signature=require_signature).summary())
        except ArtifactError as err:
            failed += 1
            from edgemed.cli._options import shown_scan

            click.echo(f"REFUSED {str(err).replace(str(path), shown_scan(path))}", err=True)
    if failed:
        raise SystemExit(1)


@click.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The archive: .tar, .tar.gz or .tgz.")
@overwrite_option
def pack(artifact: Path, out: Path, overwrite: bool) -> None:
    """Pack ARTIFACT (a bundle, signed or not) into one file for shipping, after verifying it.

    \b
    Example:
      edgemed pack out/liver.edgemed --out liver.edgemed.tar.gz
    """
    from edgemed.artifacts import pack_artifact

    pack_artifact(artifact, out, overwrite=overwrite)
    click.echo(f"wrote {out}")
    click.echo(f"next, on the device: edgemed unpack {out} --out DIR [--key PUBLIC.pem]")


@click.command()
@click.argument("archive", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The artifact directory to create.")
@click.option("--key", "keys", multiple=True, type=click.Path(path_type=Path),
              help="Require a signature by this trusted public key (repeatable; default: $EDGEMED_TRUSTED_KEYS).")
@click.option("--max-mb", type=float, default=4096, show_default=True, help="Refuse archives extracting to more.")
@overwrite_option
def unpack(archive: Path, out: Path, keys: tuple[Path, ...], max_mb: float, overwrite: bool) -> None:
    """Extract a packed artifact safely (no paths outside OUT, no links, size-capped), then verify it.

    \b
    Example:
      edgemed unpack liver.edgemed.tar.gz --out /opt/models/liver.edgemed --key release.pub.pem
    """
    from edgemed.artifacts import extract_artifact

    extract_artifact(archive, out, max_bytes=int(max_mb * 2**20), trusted_keys=list(keys) or None, overwrite=overwrite)
    click.echo(f"wrote {out} (verified)")
