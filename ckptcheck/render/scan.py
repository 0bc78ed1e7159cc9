"""``ckptcheck scan``'s report as text, as JSON (schema ckptcheck.scan/1) and as SARIF 2.1.0 (GitHub code
scanning). Returns strings and dicts; never prints."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from ckptcheck.records import SafetyFinding
from ckptcheck.scan import SCHEMA, FileScan, ScanReport

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
# What each rule is, for SARIF's rule list and the README.
RULES: dict[str, str] = {
    "lambda-bytecode": "A Lambda (or other function) carries Python bytecode that runs when the model is loaded",
    "module-import": "The config names a function or class from a module outside Keras, imported on load",
    "keras-gadget": "The config names a Keras callable outside the modeling APIs (downloads, loads another file, "
                    "turns safe mode off)",
    "keras-path": "A layer reads a file or URL named in its config when the model is built",
    "custom-object": "A registered custom class: code the user installs, run on load if importable",
    "hdf5-outside": "An HDF5 dataset or link reads another file (external storage, external link, virtual dataset)",
    "zip-duplicate": "A zip member name appears more than once; readers disagree on which one they take",
    "pickle-callable": "A pickle names a callable outside numpy's array reconstruction",
    "tf-op": "A SavedModel op touches files, the network or other processes",
    "tf-custom-op": "A SavedModel op TensorFlow does not register: a custom op whose kernel is not scanned",
}


def finding_line(path: str, f: SafetyFinding) -> str:
    return f"{path}: {f.severity} ({f.when}): {f.location}: {f.message}"


def scan_text(report: ScanReport) -> str:
    """One line per finding and note (``PATH: warning (load): WHERE: WHAT``), one per clean file, and a summary."""
    lines: list[str] = []
    for file in report.files:  # what could not be read is on stderr (scan_errors); what was found, here
        for f in file.findings:
            lines.append(finding_line(file.path, f))
        lines += [f"{file.path}: note: {n}" for n in file.notes]
        if not file.warnings and file.error is None:
            lines.append(f"{file.path}: no finding ({file.kind}; scanned {', '.join(file.scanned) or 'nothing'})")
    n = len(report.files)
    flagged = sum(1 for f in report.files if f.warnings)
    lines.append(f"scanned {n} model file{'s' if n != 1 else ''}: {flagged} with warnings "
                 f"({report.warnings} in all), {report.unreadable} unreadable")
    return "\n".join(lines)


def scan_errors(report: ScanReport) -> list[str]:
    """One line per file that could not be scanned, for stderr."""
    return [f"{f.path}: {f.error}" for f in report.files if f.error is not None]


def _finding_dict(f: SafetyFinding) -> dict[str, Any]:
    return {"location": f.location, "message": f.message, "rule": f.rule, "severity": f.severity, "when": f.when}


def _file_dict(f: FileScan) -> dict[str, Any]:
    return {"path": f.path, "kind": f.kind, "scanned": list(f.scanned),
            "findings": [_finding_dict(x) for x in f.findings], "notes": list(f.notes), "error": f.error}


def scan_dict(report: ScanReport) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "files": [_file_dict(f) for f in report.files],
        "summary": {"files": len(report.files), "with_warnings": sum(1 for f in report.files if f.warnings),
                    "warnings": report.warnings, "unreadable": report.unreadable, "exit_code": report.exit_code},
    }


def _uri(path: str) -> str:
    """A path relative to the working directory (what code scanning matches against the repository), or an
    absolute file URI for a path outside it."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    if not relative.startswith(".."):
        return quote(relative.replace(os.sep, "/"))
    return "file://" + quote(absolute.replace(os.sep, "/"))


def sarif_dict(report: ScanReport, *, version: str) -> dict[str, Any]:
    used = sorted({f.rule for file in report.files for f in file.findings if f.rule})
    rules = [{"id": r, "name": r, "shortDescription": {"text": RULES.get(r, r)},
              "defaultConfiguration": {"level": "note" if r in ("custom-object", "tf-custom-op") else "warning"}}
             for r in used]
    results = []
    for file in report.files:
        for f in file.findings:
            results.append({
                "ruleId": f.rule or "finding",
                "level": "note" if f.severity == "note" else "warning",
                "message": {"text": f"{f.location}: {f.message} (runs: {f.when})"},
                "locations": [{
                    "physicalLocation": {"artifactLocation": {"uri": _uri(file.path)}},
                    "logicalLocations": [{"name": f.location, "kind": "member"}],
                }],
                "properties": {"when": f.when},
            })
    notifications = [{"level": "error", "message": {"text": f"{f.path}: {f.error}"},
                      "locations": [{"physicalLocation": {"artifactLocation": {"uri": _uri(f.path)}}}]}
                     for f in report.files if f.error is not None]
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "ckptcheck", "version": version, "rules": rules}},
            "invocations": [{"executionSuccessful": not notifications,
                             "toolExecutionNotifications": notifications}],
            "results": results,
        }],
    }
