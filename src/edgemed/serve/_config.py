"""The node's one TOML file, parsed into frozen dataclasses; a wrong key or value names the key."""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edgemed.errors import ConfigError, InputError

__all__ = ["BundleConfig", "DicomwebInputConfig", "DimseInputConfig", "HttpConfig", "NodeConfig", "OutputConfig",
           "RouteConfig", "TlsConfig", "load_config", "node_config_from_dict"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsConfig:
    """TLS for a DICOM association: this side's certificate and key, and the CA that peers must be signed by."""

    cert: str
    key: str
    ca: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BundleConfig:
    """A bundle the node runs, by name (routes refer to it)."""

    name: str
    path: str
    backend: str = "auto"


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteConfig:
    """Which series go to which bundle: every given condition must hold (case-insensitive); first match wins."""

    bundle: str
    modality: str | None = None
    body_part: str | None = None
    series_description: str | None = None  # a regular expression, searched in SeriesDescription
    organs: tuple[str, ...] = ()  # the bundle's organs to put in the SEG; empty: all of them

    def __post_init__(self) -> None:
        if self.series_description is not None:
            try:
                re.compile(self.series_description)
            except re.error as err:
                raise ConfigError(f"[[routes]] series_description={self.series_description!r} is not a valid "
                                  f"regular expression ({err}); fix the pattern.") from err


@dataclass(frozen=True, slots=True, kw_only=True)
class DimseInputConfig:
    """The C-STORE listener."""

    port: int = 11112
    bind: str = "127.0.0.1"
    ae_title: str = "EDGEMED"
    allowed_ae_titles: tuple[str, ...] = ()  # who may send; ("*",) lets anyone (not the default)
    tls: TlsConfig | None = None

    def __post_init__(self) -> None:
        if not self.allowed_ae_titles:
            raise ConfigError("[inputs.dimse] allowed_ae_titles is empty: list the AE titles that may send "
                              "(e.g. allowed_ae_titles = [\"ORTHANC\"]), or [\"*\"] to accept any.")
        _check_port(self.port, "[inputs.dimse] port")


@dataclass(frozen=True, slots=True, kw_only=True)
class DicomwebInputConfig:
    """The DICOMweb poller (QIDO-RS to find series, WADO-RS to fetch them)."""

    url: str
    poll_interval_s: float = 5.0
    username: str | None = None
    password: str | None = None
    ca: str | None = None  # CA bundle for an https URL

    def __post_init__(self) -> None:
        if self.poll_interval_s <= 0:
            raise ConfigError(f"[inputs.dicomweb] poll_interval_s={self.poll_interval_s} must be > 0.")


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputConfig:
    """Where SEGs go: `kind = "dimse"` (C-STORE to host:port, ae_title) or `kind = "dicomweb"` (STOW-RS to url)."""

    kind: str
    host: str = "127.0.0.1"
    port: int = 104
    ae_title: str = "ANY-SCP"  # the called AE title of the PACS
    calling_ae_title: str = "EDGEMED"
    url: str | None = None
    username: str | None = None
    password: str | None = None
    ca: str | None = None
    tls: TlsConfig | None = None
    retry_initial_s: float = 2.0
    retry_max_s: float = 60.0
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.kind not in ("dimse", "dicomweb"):
            raise ConfigError(f"[output] kind={self.kind!r}: use \"dimse\" (C-STORE) or \"dicomweb\" (STOW-RS).")
        if self.kind == "dicomweb" and not self.url:
            raise ConfigError("[output] kind=\"dicomweb\" needs url (e.g. url = \"http://pacs:8042/dicom-web\").")
        if self.kind == "dimse":
            _check_port(self.port, "[output] port")
        if not 0 < self.retry_initial_s <= self.retry_max_s:
            raise ConfigError(f"[output] retry_initial_s={self.retry_initial_s} must be > 0 and <= "
                              f"retry_max_s={self.retry_max_s}.")


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpConfig:
    """/healthz and /metrics (Prometheus text format). port = 0 turns them off."""

    port: int = 9095
    bind: str = "127.0.0.1"


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """The whole node: its folder, bundles, routes, inputs, output and HTTP endpoint."""

    folder: str
    bundles: tuple[BundleConfig, ...]
    routes: tuple[RouteConfig, ...]
    output: OutputConfig
    dimse: DimseInputConfig | None = None
    dicomweb: DicomwebInputConfig | None = None
    http: HttpConfig = field(default_factory=HttpConfig)
    quiet_period_s: float = 10.0
    keep_images: bool = False
    threads: int | None = None
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.dimse is None and self.dicomweb is None:
            raise ConfigError("the config has no input: add [inputs.dimse] (C-STORE listener) or [inputs.dicomweb] "
                              "(poll a PACS).")
        if not self.bundles:
            raise ConfigError("the config has no bundle: add a [[bundles]] table with name and path.")
        if not self.routes:
            raise ConfigError("the config has no route: add a [[routes]] table (bundle = \"...\", modality = \"CT\").")
        names = [b.name for b in self.bundles]
        for route in self.routes:
            if route.bundle not in names:
                raise ConfigError(f"[[routes]] bundle={route.bundle!r} is not a [[bundles]] name; known: "
                                  f"{', '.join(names)}.")
        if self.quiet_period_s < 0:
            raise ConfigError(f"[node] quiet_period_s={self.quiet_period_s} must be >= 0.")


def _check_port(port: int, key: str) -> None:
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"{key}={port!r} must be a port number (0-65535).")


def _check_keys(raw: dict[str, Any], cls: type, where: str, extra: tuple[str, ...] = ()) -> None:
    known = sorted({f.name for f in fields(cls)} | set(extra))
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else f" Known keys: {', '.join(known)}."
            raise ConfigError(f"unknown key {where}{key!r} in the node config.{hint}")


def _build(cls: type, raw: Any, where: str, **overrides: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where.strip()} must be a table in the node config.")
    _check_keys(raw, cls, f"{where} " if where else "")
    values = {**raw, **overrides}
    for f in fields(cls):
        if f.name in values and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    try:
        return cls(**values)
    except TypeError as err:
        missing = re.findall(r"'(\w+)'", str(err))
        raise ConfigError(f"{where or 'the node config'} is missing or has a wrong key"
                          f"{' ' + repr(missing[-1]) if missing else ''} ({err}).") from err


def _tls(raw: dict[str, Any], where: str, base: Path) -> TlsConfig | None:
    if "tls" not in raw:
        return None
    tls = _build(TlsConfig, raw["tls"], f"[{where}.tls]")
    return TlsConfig(cert=str(base / tls.cert), key=str(base / tls.key), ca=None if tls.ca is None else str(base / tls.ca))


def node_config_from_dict(raw: dict[str, Any], *, base_dir: str | os.PathLike[str] = ".") -> NodeConfig:
    """Build a NodeConfig from parsed TOML; relative paths are taken relative to `base_dir`.

    Raises:
        ConfigError: An unknown key (with a "did you mean"), a missing one, or a wrong value; the message names it.
    """
    base = Path(base_dir)
    known_top = {"node", "bundles", "routes", "inputs", "output", "http"}
    for key in raw:
        if key not in known_top:
            close = difflib.get_close_matches(key, sorted(known_top), n=1)
            hint = f" Did you mean [{close[0]}]?" if close else f" Known tables: {', '.join(sorted(known_top))}."
            raise ConfigError(f"unknown table [{key}] in the node config.{hint}")
    node = raw.get("node")
    if not isinstance(node, dict) or "folder" not in node:
        raise ConfigError("the node config needs [node] folder = \"...\" (where received images, the queue and "
                          "results live).")
    node_keys = ("folder", "quiet_period_s", "keep_images", "threads", "batch_size")
    for key in node:
        if key not in node_keys:
            close = difflib.get_close_matches(key, node_keys, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else f" Known keys: {', '.join(node_keys)}."
            raise ConfigError(f"unknown key [node] {key!r} in the node config.{hint}")
    bundles = tuple(_build(BundleConfig, b, "[[bundles]]") for b in _tables(raw.get("bundles", []), "bundles"))
    bundles = tuple(BundleConfig(name=b.name, path=str(base / b.path), backend=b.backend) for b in bundles)
    routes = tuple(_build(RouteConfig, r, "[[routes]]") for r in _tables(raw.get("routes", []), "routes"))
    inputs = raw.get("inputs", {})
    if not isinstance(inputs, dict):
        raise ConfigError("inputs must be tables: [inputs.dimse] and/or [inputs.dicomweb].")
    for key in inputs:
        if key not in ("dimse", "dicomweb"):
            raise ConfigError(f"unknown table [inputs.{key}] in the node config; use [inputs.dimse] or "
                              "[inputs.dicomweb].")
    dimse = None
    if "dimse" in inputs:
        dimse = _build(DimseInputConfig, inputs["dimse"], "[inputs.dimse]",
                       tls=_tls(inputs["dimse"], "inputs.dimse", base))
    dicomweb = _build(DicomwebInputConfig, inputs["dicomweb"], "[inputs.dicomweb]") if "dicomweb" in inputs else None
    if "output" not in raw:
        raise ConfigError("the node config has no [output]: add kind = \"dimse\" (host, port, ae_title) or "
                          "kind = \"dicomweb\" (url).")
    output = _build(OutputConfig, raw["output"], "[output]", tls=_tls(raw["output"], "output", base))
    http = _build(HttpConfig, raw["http"], "[http]") if "http" in raw else HttpConfig()
    values = {k: node[k] for k in node_keys if k in node}
    values["folder"] = str(base / str(values["folder"]))
    try:
        return NodeConfig(bundles=bundles, routes=routes, output=output, dimse=dimse, dicomweb=dicomweb, http=http,
                          **values)
    except TypeError as err:
        raise ConfigError(f"[node] has a wrong value ({err}).") from err


def _tables(raw: Any, name: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise ConfigError(f"{name} must be an array of tables ([[{name}]]).")
    return raw


def load_config(path: str | os.PathLike[str]) -> NodeConfig:
    """Read the node's TOML file; relative paths in it are relative to the file.

    Raises:
        InputError: The file is missing or not valid TOML.
        ConfigError: Unknown keys or invalid values (the message names the key).
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError as err:
            raise ConfigError("reading the node config on Python 3.10 needs `pip install tomli`.") from err
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise InputError(f"node config {file} does not exist; write one (see docs/dicom-node.md).") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"node config {file} is not valid TOML ({err}); fix that line.") from err
    return node_config_from_dict(raw, base_dir=file.resolve().parent)
