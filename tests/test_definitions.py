"""The code location loads, stays light, and its public graph changes only on purpose.

The snapshot in tests/snapshots/asset_graph.json names every asset, group, partitioning, check,
sensor and schedule; a rename shows up as a diff in review. Regenerate it deliberately with
`AERO_UPDATE_SNAPSHOTS=1 pytest tests/test_definitions.py`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from aero_assets.definitions import build_definitions
from resources import load_settings

REPO = Path(__file__).resolve().parent.parent
SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


def graph_snapshot(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        pd = node.partitions_def
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "partitions": None if pd is None else getattr(pd, "name", None) or type(pd).__name__,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "materializable": node.is_materializable,
            "checks": sorted(
                f"{c.name}{' (blocking)' if graph.get(c).blocking else ''}" for c in node.check_keys
            ),
        }
    repo = defs.get_repository_def()
    return {
        "assets": assets,
        "sensors": {s.name: {"default_status": s.default_status.value,
                             "minimum_interval_seconds": s.minimum_interval_seconds}
                    for s in sorted(repo.sensor_defs, key=lambda s: s.name)},
        "schedules": {s.name: s.cron_schedule for s in sorted(repo.schedule_defs, key=lambda s: s.name)},
        "resources": sorted(defs.resources or {}),
    }


def test_asset_graph_matches_the_reviewed_snapshot(tmp_path):
    snap = graph_snapshot(build_definitions(load_settings({"AERO_HOME": str(tmp_path)})))
    if os.environ.get("AERO_UPDATE_SNAPSHOTS") or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(snap, indent=2, sort_keys=True) + "\n")
    assert snap == json.loads(SNAPSHOT.read_text())


def test_public_asset_names_of_the_design_are_present(tmp_path):
    keys = {k.to_user_string() for k in build_definitions(load_settings({"AERO_HOME": str(tmp_path)}))
            .resolve_asset_graph().get_all_asset_keys()}
    assert "windtunnel/raw_run" in keys


def test_loading_the_definitions_does_not_import_heavy_libraries():
    heavy = ("torch", "prophet", "matplotlib", "scipy.stats", "scipy.signal")
    code = f"import sys, aero_assets.definitions; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_dagster_definitions_validate_accepts_the_workspace(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "AERO_HOME": str(tmp_path / "aero")}
    dagster = Path(sys.executable).with_name("dagster")
    out = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_bad_setting_fails_the_code_location_load_naming_the_variable():
    env = {**os.environ, "AERO_ENV": "production"}
    env.pop("AERO_KAFKA_BOOTSTRAP", None)
    out = subprocess.run([sys.executable, "-c", "import aero_assets.definitions"], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "AERO_KAFKA_BOOTSTRAP is not set" in out.stderr
