"""edgemed.serve: the DICOM node (`edgemed serve`): series in over C-STORE or DICOMweb, DICOM-SEG back out.

Received instances are written durably before they are acknowledged; jobs live in a SQLite queue in
the node's folder, so a node killed at any point and restarted finishes every series exactly once
(the SEG's UIDs are derived from the source series and the bundle: a retry replaces, never doubles).
Imports torch nowhere: the node runs on the torch-free runtime.

Example:
    >>> from edgemed.serve import load_config, run_node, node_status
    >>> config = load_config("node.toml")
    >>> run_node(config)                  # until SIGTERM
    >>> node_status(config.folder)        # what `edgemed serve --status node.toml` prints
"""

from __future__ import annotations

from edgemed.serve._config import (BundleConfig, DicomwebInputConfig, DimseInputConfig, HttpConfig, NodeConfig,
                                   OutputConfig, RouteConfig, TlsConfig, load_config, node_config_from_dict)
from edgemed.serve._node import node_status, run_node
from edgemed.serve._process import seg_uids
from edgemed.serve._series import write_ct_series

__all__ = [
    "BundleConfig",
    "DicomwebInputConfig",
    "DimseInputConfig",
    "HttpConfig",
    "NodeConfig",
    "OutputConfig",
    "RouteConfig",
    "TlsConfig",
    "load_config",
    "node_config_from_dict",
    "node_status",
    "run_node",
    "seg_uids",
    "write_ct_series",
]
