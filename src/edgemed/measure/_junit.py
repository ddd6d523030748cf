"""JUnit XML for CI systems (GitHub, GitLab, Jenkins show it as test results): one test case per metric."""

from __future__ import annotations

import os
import socket
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

from edgemed._atomic import atomic_file
from edgemed.measure._compare import GateResult

__all__ = ["junit_xml", "write_junit_xml"]


def junit_xml(result: GateResult) -> str:
    """The gate's verdict as a JUnit XML document.

    One `<testcase>` per metric (classname `edgemed.check.<bundle>`): a regression is a
    `<failure>` whose message says what regressed and by how much; a "noisy" or reported-only
    metric passes with its detail in `<system-out>`; a latency row not judged because the machine
    was busy is `<skipped>` with the reason. The whole table is the suite's system-out.
    """
    m = result.candidate
    skipped = sum(c.status == "busy" for c in result.checks)
    suite = ET.Element("testsuite", {
        "name": f"edgemed check {result.bundle}", "tests": str(len(result.checks)),
        "failures": str(len(result.failures)), "errors": "0", "skipped": str(skipped), "time": f"{m.wall_s:.3f}",
        "timestamp": m.created_utc or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname() or "localhost"})
    props = ET.SubElement(suite, "properties")
    for key, value in (("baseline", result.baseline_path), ("backend", m.backend), ("threads", str(m.threads)),
                       ("clock", m.clock), ("repeats", str(len(m.candidate_ms))),
                       ("cpu_model", str(m.host.get("cpu_model", "")))):
        ET.SubElement(props, "property", {"name": key, "value": value})
    for check in result.checks:
        case = ET.SubElement(suite, "testcase", {"classname": f"edgemed.check.{result.bundle}",
                                                 "name": check.label, "time": "0"})
        if check.status == "fail":
            failure = ET.SubElement(case, "failure", {"message": f"{check.label}: {check.detail}",
                                                      "type": "regression"})
            failure.text = (f"baseline {check.baseline}, candidate {check.candidate}, change {check.change} "
                            f"{check.interval}, limit {check.limit}")
        elif check.status == "busy":
            ET.SubElement(case, "skipped", {"message": f"machine busy: {check.detail}"})
        else:
            ET.SubElement(case, "system-out").text = f"[{check.status}] {check.detail}"
    ET.SubElement(suite, "system-out").text = result.table()
    root = ET.Element("testsuites", {"name": "edgemed check", "tests": suite.get("tests", "0"),
                                     "failures": suite.get("failures", "0"), "errors": "0"})
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit_xml(result: GateResult, path: str | os.PathLike[str]) -> Path:
    """Write `junit_xml(result)` to `path` atomically; returns the path."""
    target = Path(path)
    with atomic_file(target) as tmp:
        tmp.write_text(junit_xml(result), encoding="utf-8")
    return target
