"""`rig_inbox_sensor`: a CSV dropped into `$AERO_HOME/inbox/rig/` is landed once it is complete.

Complete means: a `<name>.done` marker exists beside it, or its size and modification time were
the same on two ticks at least `settle_s` apart (a file still being copied keeps changing). The run
key is the name, size and SHA-256 of the content, so an unchanged file is never landed twice and a
rewritten one (new content, same name) is landed again. The landing run moves the file to
`processed/`, or to `rejected/` with a reason file. Cheap: a directory listing per tick and one hash
per settled file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import dagster as dg

from aero_assets.keys import RIG_INBOX_ASSET, RIG_READINGS
from aero_assets.rig.csv_inbox import sha256_of
from aero_assets.rig.landing import checked_name
from resources.lake import LakeResource

MAX_FILES_PER_TICK = 50


def build_rig_inbox_sensor(settle_s: float = 2.0, minimum_interval_seconds: int = 5) -> dg.SensorDefinition:
    @dg.sensor(name="rig_inbox_sensor", asset_selection=[RIG_READINGS],
               minimum_interval_seconds=minimum_interval_seconds, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Lands each complete CSV in `$AERO_HOME/inbox/rig/` (size and mtime stable across ticks, "
                           "or a `.done` marker); run key = name, size and content hash.")
    def rig_inbox_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
        inbox = lake.inbox / "rig"
        try:
            seen = json.loads(context.cursor or "{}")
            seen = seen if isinstance(seen, dict) else {}
        except ValueError:
            seen = {}
        if not inbox.is_dir():
            return dg.SkipReason(f"{inbox} does not exist yet: drop CSV files there.")
        now = time.time()
        requests, waiting, refused = [], [], []
        current: dict[str, list] = {}
        for path in sorted(inbox.iterdir()):
            name = path.name
            if path.suffix.lower() != ".csv" or path.is_dir():
                continue
            if path.is_symlink():  # never followed out of the inbox
                refused.append(f"{name!r}: a symbolic link (copy the file itself into the inbox)")
                continue
            try:
                checked_name(name)
            except ValueError as exc:
                refused.append(f"{name!r}: {exc}")
                continue
            try:
                st = path.stat()
            except FileNotFoundError:  # moved away since the listing (a landing run, a person): next tick sees
                continue
            sig = [st.st_size, st.st_mtime_ns]
            prev = seen.get(name)
            done = Path(f"{path}.done").exists()
            settled = prev is not None and prev[:2] == sig and now - prev[2] >= settle_s
            current[name] = [*sig, prev[2] if prev and prev[:2] == sig else now]
            if not (done or settled):
                waiting.append(name)
                continue
            if len(requests) >= MAX_FILES_PER_TICK:
                continue
            # hashed once per version: a file that stays (landed before, unchanged) is not re-read every tick
            sha = prev[3] if prev is not None and len(prev) > 3 and prev[:2] == sig else None
            if sha is None:
                try:
                    sha = sha256_of(path)
                except FileNotFoundError:
                    continue
            current[name].append(sha)
            requests.append(dg.RunRequest(
                run_key=f"rig-csv/{name}/{st.st_size}/{sha}", asset_selection=[RIG_READINGS],
                run_config={"ops": {"rig__readings": {"config": {"file": name, "sha256": sha}}}},
                tags={"aero/source": "csv", "aero/file": name, "aero/sha256": sha[:16]}))
        for r in refused[:5]:
            context.log.warning(f"not landing {r}")
        cursor = json.dumps(current)
        if not requests:
            why = (f"waiting for {len(waiting)} file(s) to settle: {', '.join(waiting[:5])}" if waiting
                   else f"no CSV files in {inbox}")
            return dg.SensorResult(cursor=cursor, skip_reason=why)
        return dg.SensorResult(run_requests=requests, cursor=cursor,
                               asset_events=[dg.AssetObservation(asset_key=RIG_INBOX_ASSET, metadata={
                                   "files_requested": len(requests), "files_waiting": len(waiting)})])

    return rig_inbox_sensor
