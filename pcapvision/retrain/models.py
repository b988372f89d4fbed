"""What people do with a registry by hand: list, show, promote, roll back; and the monitoring line."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pcapvision.errors import ParameterError
from pcapvision.lock import exclusive_lock
from pcapvision.retrain.job import open_registry


def list_versions(uri: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One row per version: number, created, decision at creation, role now, holdout F1 and FPR."""
    reg = open_registry(uri)
    reg.check_exists()
    aliases = reg.aliases()
    rows = []
    for record in reg.versions():
        figures = ((record.get("metrics") or {}).get("challenger") or {}).get("figures") or {}
        n = record["version"]
        role = "champion" if n == aliases.get("champion") else (
            "previous champion" if n in aliases.get("previous", []) else "")
        rows.append({"version": n, "created": record.get("created"), "decision": record.get("decision"), "role": role,
                     "holdout_version": (record.get("holdout") or {}).get("version"),
                     "f1_name": figures.get("f1_name"), "f1": figures.get("f1"), "fpr": figures.get("fpr"),
                     "robust_accuracy": figures.get("robust_accuracy"), "drifted": (record.get("drift") or {}).get("drifted")})
    return rows


def format_versions(rows: list[Mapping[str, Any]]) -> str:
    """The ``models list`` table."""
    if not rows:
        return "no versions"

    def num(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else "-"

    lines = [f"{'version':>7}  {'created':<25}  {'decision':<9}  {'role':<17}  {'holdout':>7}  {'F1':>6}  {'FPR':>6}  "
             f"{'FGSM acc':>8}  drift"]
    for r in rows:
        lines.append(f"{r['version']:>7}  {r['created'] or '-':<25}  {r['decision'] or '-':<9}  {r['role']:<17}  "
                     f"{'v' + str(r['holdout_version']) if r['holdout_version'] else '-':>7}  {num(r['f1']):>6}  "
                     f"{num(r['fpr']):>6}  {num(r['robust_accuracy']):>8}  {'yes' if r['drifted'] else 'no'}")
    return "\n".join(lines)


def show_version(uri: str | os.PathLike[str], version: int) -> dict[str, Any]:
    """The full record of one version (``version.json``), with its model directory."""
    reg = open_registry(uri)
    reg.check_exists()
    return {**reg.version(version), "model_dir": os.fspath(reg.model_dir(version)),
            "champion": reg.champion() == version}


def promote(uri: str | os.PathLike[str], version: int) -> dict[str, Any]:
    """Make ``version`` the champion (by hand: no gate is checked); return the aliases."""
    reg = open_registry(uri)
    reg.check_exists()
    with exclusive_lock(reg.lock_path, what="models promote"):
        return reg.promote(version, reason="manual promote")


def rollback(uri: str | os.PathLike[str]) -> dict[str, Any]:
    """Make the previous champion the champion again; return the aliases."""
    reg = open_registry(uri)
    reg.check_exists()
    with exclusive_lock(reg.lock_path, what="models rollback"):
        return reg.rollback(reason="manual rollback")


def champion_paths(uri: str | os.PathLike[str]) -> tuple[Path, Path | None]:
    """``(model_dir, reference_npz or None)`` of the current champion."""
    reg = open_registry(uri)
    reg.check_exists()
    champion = reg.champion()
    if champion is None:
        raise ParameterError(f"The 'registry' parameter must name a registry with a champion. Got {reg.uri!r} instead "
                             "(no version has been promoted yet).")
    reference = reg.reference_path(champion)
    return reg.model_dir(champion), reference if reference.is_file() else None


def monitoring_line(record: Mapping[str, Any]) -> str:
    """The one JSON line ``pcapvision retrain`` prints on stdout, for schedulers and alerting."""
    drift = record.get("drift") or {}
    line = {
        "event": "pcapvision.retrain", "status": record.get("status"), "exit_code": record.get("exit_code"),
        "run_id": record.get("run_id"), "registry": record.get("registry"), "version": record.get("version"),
        "champion_before": record.get("champion_before"), "champion_after": record.get("champion_after"),
        "failed_gates": record.get("failed_gates", []), "drifted": bool(drift.get("drifted")),
        "drift_flags": drift.get("flags", []), "new_groups": len(record.get("new_groups", [])),
        "seconds": (record.get("seconds") or {}).get("total"),
    }
    if record.get("error"):
        line["error"] = record["error"]
    return json.dumps(line, default=str)


__all__ = ["champion_paths", "format_versions", "list_versions", "monitoring_line", "promote", "rollback", "show_version"]
