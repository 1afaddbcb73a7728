"""Dagster wiring of the F1 domain: landed telemetry, lap summaries per session, laps released to Kafka.

Numbers come from `laps` (pure); these bodies read the lake, call it, write Parquet per session,
attach plots and checks, and publish completed laps to `f1.analytics` exactly once per lap key.
Publication is its own asset behind a blocking check, so a summary whose row counts disagree with
the landed telemetry is never released.
"""


import json
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aero_assets.f1.decoder import F1TelemetryDecoder, SessionEventsDecoder
from aero_assets.f1.laps import Telemetry, summarise_laps
from aero_assets.f1.plots import sector_table_md
from aero_assets.f1.settings import F1Limits
from aero_assets.keys import (
    F1,
    F1_ANALYTICS_TOPIC_ASSET,
    F1_LANDING_POOL,
    F1_LAP_SUMMARIES,
    F1_PUBLISH_POOL,
    F1_PUBLISHED_LAPS,
    F1_SESSIONS_TOPIC_ASSET,
    F1_TELEMETRY,
    F1_TELEMETRY_TOPIC_ASSET,
    f1_sessions,
)
from aero_assets.landing import land_topic
from aero_assets.landing_state import landed_files, topic_lock
from resources import KafkaResource, LakeResource, Topics, write_parquet_atomic
from resources.lake import write_bytes_atomic

DISTANCE_CHECK = "lap_distance_within_tolerance"
GAP_CHECK = "no_gap_inside_a_lap"
REALISM_CHECK = "lap_time_in_realism_band"
COUNT_CHECK = "summary_counts_match_landed_telemetry"
PUBLISHED_CHECK = "each_completed_lap_published_once"
SPLIT = "session_id"
_HEADERS = [("content-type", b"application/json")]


def lap_key(session_id: str, lap: int) -> str:
    """Key of a lap on `f1.analytics`: the session and the lap, so a consumer can count laps by key."""
    return f"{session_id}:{int(lap)}"


def session_files(lake: LakeResource, topic: str, session_id: str) -> tuple[list[Path], list[str]]:
    """(the session's landed files of the newest topic incarnation in offset order, incarnations left out).

    A session id can come back after a broker restart or a recreated topic: that is another car's data
    under the same name, and mixing both would summarise two cars as one lap. The incarnation whose
    files were written last is the session; older ones are reported, never merged.
    """
    files = landed_files(lake.landing_dir(topic), split=(SPLIT, session_id))
    by_inc: dict[str, list[Path]] = {}
    for f in files:
        by_inc.setdefault(f.name.split("-p", 1)[0], []).append(f)
    if len(by_inc) <= 1:
        return files, []
    newest = max(by_inc, key=lambda inc: max(f.stat().st_mtime_ns for f in by_inc[inc]))
    return by_inc[newest], sorted(set(by_inc) - {newest})


def session_telemetry(lake: LakeResource, topic: str, session_id: str, files: list[Path] | None = None) -> pa.Table:
    """The landed rows of one session (of `files`, default: its current incarnation's), in landing order."""
    files = session_files(lake, topic, session_id)[0] if files is None else files
    if not files:
        return F1TelemetryDecoder.schema.empty_table()
    return pa.concat_tables([pq.read_table(f, schema=F1TelemetryDecoder.schema.append(
        pa.field("_offset", pa.int64()))).drop_columns(["_offset"]) for f in files])


def session_events(lake: LakeResource, topic: str, session_id: str) -> pd.DataFrame:
    files, _ = session_files(lake, topic, session_id)
    if not files:
        return pd.DataFrame(columns=["event", "ts", "lap", "lap_time_s", "track"])
    return pa.concat_tables([pq.read_table(f, columns=["event", "ts", "lap", "lap_time_s", "track"])
                             for f in files]).to_pandas()


def _track(events: pd.DataFrame):
    from aero_assets.f1.track import silverstone

    names = {str(t).lower() for t in events.get("track", pd.Series(dtype=str)).dropna()}
    unknown = names - {"silverstone"}
    if unknown:
        raise dg.Failure(description=f"session_started names track(s) {sorted(unknown)}: only 'silverstone' is "
                                     "modelled; lap distances and sectors would be wrong.")
    return silverstone()


def build_f1_assets(topics: Topics, limits: F1Limits) -> list:
    tele_topic, sessions_topic, analytics_topic = topics.f1_telemetry, topics.f1_sessions, topics.f1_analytics
    topic_specs = [
        dg.AssetSpec(F1_TELEMETRY_TOPIC_ASSET, group_name=F1, kinds={"kafka"},
                     description=f"Kafka topic `{tele_topic}`: 100 Hz telemetry (JSON or Arrow), key = session id."),
        dg.AssetSpec(F1_SESSIONS_TOPIC_ASSET, group_name=F1, kinds={"kafka"},
                     description=f"Kafka topic `{sessions_topic}`: session_started / lap_completed / "
                                 "session_finished events, key = session id."),
        dg.AssetSpec(F1_ANALYTICS_TOPIC_ASSET, group_name=F1, kinds={"kafka"}, deps=[F1_PUBLISHED_LAPS],
                     description=f"Kafka topic `{analytics_topic}`: one lap summary per completed lap, key = "
                                 "`<session>:<lap>`."),
    ]

    @dg.asset(key=F1_TELEMETRY, group_name=F1, deps=[F1_TELEMETRY_TOPIC_ASSET, F1_SESSIONS_TOPIC_ASSET],
              pool=F1_LANDING_POOL, kinds={"parquet"},
              description=f"Telemetry and session events landed exactly once from `{tele_topic}` and "
                          f"`{sessions_topic}`, split by session (append by offset range).")
    def telemetry(context: dg.AssetExecutionContext, kafka: KafkaResource, lake: LakeResource):
        tele = land_topic(kafka, lake.path, tele_topic, F1TelemetryDecoder())
        # events after telemetry: a session_finished seen here follows every sample the car sent before it
        events = land_topic(kafka, lake.path, sessions_topic, SessionEventsDecoder())
        touched: dict[str, int] = {}
        for f in tele.files:
            sid = f.parent.name.removeprefix(f"{SPLIT}=")
            top = pc.max(pq.read_table(f, columns=["lap"])["lap"]).as_py()
            touched[sid] = max(touched.get(sid, -1), int(top if top is not None else -1))
        finished = sorted({f.parent.name.removeprefix(f"{SPLIT}=") for f in events.files
                           if "session_finished" in pq.read_table(f, columns=["event"])["event"].to_pylist()})
        started = sorted({f.parent.name.removeprefix(f"{SPLIT}=") for f in events.files})
        context.log.info(f"landed {tele.rows} samples ({tele.messages} messages) and {events.rows} events; "
                         f"sessions touched: {touched}" + (f"; finished: {finished}" if finished else "")
                         + (f"; {tele.dlq_messages} to the DLQ: {dict(tele.dlq_reasons)}" if tele.dlq_messages
                            else ""))
        return dg.MaterializeResult(metadata={
            "dagster/row_count": tele.rows,
            "messages": tele.messages,
            "dlq_messages": tele.dlq_messages + events.dlq_messages,
            "dlq_reasons": dg.MetadataValue.json(dict((tele.dlq_reasons + events.dlq_reasons).most_common(10))),
            "samples_per_s": round(tele.rows / tele.seconds, 1) if tele.seconds else 0.0,
            "sessions_touched": dg.MetadataValue.json(touched),
            "sessions_with_events": dg.MetadataValue.json(started),
            "sessions_finished": dg.MetadataValue.json(finished),
            "telemetry_landing": dg.MetadataValue.json(tele.metadata()),
            "events_landing": dg.MetadataValue.json(events.metadata()),
        })

    @dg.asset(
        key=F1_LAP_SUMMARIES, group_name=F1, partitions_def=f1_sessions, deps=[F1_TELEMETRY], kinds={"parquet"},
        check_specs=[
            dg.AssetCheckSpec(COUNT_CHECK, asset=F1_LAP_SUMMARIES, blocking=True,
                              description="Samples in the summarised laps + the lap in progress + dropped "
                                          "duplicates = rows landed for the session (read independently)."),
            dg.AssetCheckSpec(DISTANCE_CHECK, asset=F1_LAP_SUMMARIES,
                              description=f"Every full lap's distance (speed integrated over time) is within "
                                          f"{limits.distance_tolerance:.0%} of the track length."),
            dg.AssetCheckSpec(GAP_CHECK, asset=F1_LAP_SUMMARIES,
                              description=f"No gap above {limits.max_gap_ms:g} ms between samples inside a lap."),
            dg.AssetCheckSpec(REALISM_CHECK, asset=F1_LAP_SUMMARIES,
                              description=f"Flying laps take {limits.lap_time_min_s:g}-{limits.lap_time_max_s:g} s."),
        ],
        description="Per completed lap: lap and sector times, avg/max speed, throttle and brake %, fuel used, "
                    "peak lateral/longitudinal g, gear changes; out-laps and laps with gaps flagged, the lap in "
                    "progress left out. Queryable as `f1.lap_summaries`.",
    )
    def lap_summaries(context: dg.AssetExecutionContext, lake: LakeResource):
        t0 = time.perf_counter()
        sid = context.partition_key
        events = session_events(lake, sessions_topic, sid)
        track = _track(events)
        finished = {sid} if (events["event"] == "session_finished").any() else set()
        files, ignored = session_files(lake, tele_topic, sid)
        if ignored:
            context.log.warning(f"session {sid} also has telemetry of older topic incarnations {ignored} (a broker "
                                "restart or a recreated topic reused the id): summarising the newest one only")
        table = session_telemetry(lake, tele_topic, sid, files)
        tel = Telemetry.from_table(table)
        summaries, order = summarise_laps(tel, track.length_m, track.sectors_m, finished)
        done = summaries.filter(summaries["complete"])
        in_progress = summaries.filter(pc.invert(summaries["complete"]))
        path = lake.partition_dir(F1_LAP_SUMMARIES, session_id=sid) / "data.parquet"
        write_parquet_atomic(done, path)
        df = done.to_pandas()

        # checks, each from what it is about; the count is taken from the files' own metadata - of the files
        # the summary read, so a landing writing the next file meanwhile is not a discrepancy
        landed = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        counted = int(pc.sum(summaries["samples"]).as_py() or 0) + order.duplicates_dropped
        full = df[~df["out_lap"] & ~df["short_of_line"]] if len(df) else df
        off = full[(full["distance_m"] - track.length_m).abs() > limits.distance_tolerance * track.length_m] \
            if len(full) else full
        gaps = df[df["max_gap_ms"] > limits.max_gap_ms] if len(df) else df
        flying = full[~full["has_gap"]] if len(full) else full
        unreal = flying[(flying["lap_time_s"] < limits.lap_time_min_s)
                        | (flying["lap_time_s"] > limits.lap_time_max_s)] if len(flying) else flying
        checks = [
            dg.AssetCheckResult(check_name=COUNT_CHECK, passed=landed == counted,
                                metadata={"landed_rows": landed, "summarised_rows": counted - order.duplicates_dropped,
                                          "duplicates_dropped": order.duplicates_dropped},
                                description=f"{counted:,} rows accounted for, {landed:,} landed"),
            dg.AssetCheckResult(check_name=DISTANCE_CHECK, passed=off.empty,
                                metadata={"laps_checked": len(full), "laps_off": dg.MetadataValue.json(
                                    {int(r.lap): round(float(r.distance_m), 1) for r in off.itertuples()})},
                                description=f"{len(full) - len(off)} of {len(full)} full laps within "
                                            f"{limits.distance_tolerance:.0%} of {track.length_m:g} m"),
            dg.AssetCheckResult(check_name=GAP_CHECK, passed=gaps.empty, severity=dg.AssetCheckSeverity.WARN,
                                metadata={"laps_with_gaps": dg.MetadataValue.json(
                                    {int(r.lap): round(float(r.max_gap_ms), 1) for r in gaps.itertuples()})},
                                description="no gaps" if gaps.empty else
                                f"{len(gaps)} lap(s) with a gap, worst {gaps['max_gap_ms'].max():.0f} ms "
                                "(flagged has_gap, still summarised)"),
            dg.AssetCheckResult(check_name=REALISM_CHECK, passed=unreal.empty, severity=dg.AssetCheckSeverity.WARN,
                                metadata={"flying_laps": len(flying), "outside": dg.MetadataValue.json(
                                    {int(r.lap): round(float(r.lap_time_s), 3) for r in unreal.itertuples()})},
                                description=f"{len(flying) - len(unreal)} of {len(flying)} flying laps in "
                                            f"{limits.lap_time_min_s:g}-{limits.lap_time_max_s:g} s"),
        ]
        # the verdict travels with the file: the release refuses a summary whose blocking check failed, even
        # when it is materialized on its own (a backfill, a click), not behind the check in the same run
        write_bytes_atomic(path.with_name("checks.json"), json.dumps(
            {"counts_match": landed == counted, "landed": landed, "counted": counted,
             "incarnations_ignored": ignored}).encode())
        meta = {
            "dagster/row_count": done.num_rows,
            "incarnations_ignored": dg.MetadataValue.json(ignored),
            "laps_in_progress": dg.MetadataValue.json([int(x) for x in in_progress["lap"].to_pylist()]),
            "session_finished": bool(finished),
            "flagged_laps": dg.MetadataValue.json({int(r.lap): r.flags for r in df.itertuples() if r.flags}),
            "order_repairs": dg.MetadataValue.json(order.as_dict()),
            "path": dg.MetadataValue.path(str(path)),
            "seconds": round(time.perf_counter() - t0, 3),
            "sector_times": dg.MetadataValue.md(sector_table_md(df)),
        }
        if len(flying):
            best = flying.loc[flying["lap_time_s"].idxmin()]
            meta.update({"fastest_lap": int(best["lap"]), "fastest_lap_time_s": round(float(best["lap_time_s"]), 3),
                         "vmax_kph": round(float(df["max_speed_kph"].max()), 1),
                         "peak_lat_g": round(float(df["peak_lat_g"].max()), 2)})
        meta.update(_plot_metadata(table, tel, df, sid))
        return dg.MaterializeResult(metadata=meta, check_results=checks)

    @dg.asset(
        key=F1_PUBLISHED_LAPS, group_name=F1, partitions_def=f1_sessions, deps=[F1_LAP_SUMMARIES],
        pool=F1_PUBLISH_POOL, kinds={"kafka"},
        check_specs=[dg.AssetCheckSpec(PUBLISHED_CHECK, asset=F1_PUBLISHED_LAPS,
                                       description=f"Every completed lap of the session is on `{analytics_topic}` "
                                                   "exactly once (by key).")],
        description=f"The release: completed laps of the session published to `{analytics_topic}` once each "
                    "(a lap already on the topic is not published again, whatever re-materializes).",
    )
    def published_laps(context: dg.AssetExecutionContext, kafka: KafkaResource, lake: LakeResource):
        sid = context.partition_key
        path = lake.partition_dir(F1_LAP_SUMMARIES, session_id=sid) / "data.parquet"
        done = pq.read_table(path).to_pandas() if path.exists() else pd.DataFrame(columns=["lap"])
        verdict_path = path.with_name("checks.json")
        verdict = json.loads(verdict_path.read_text()) if verdict_path.exists() else {"counts_match": not len(done)}
        if not verdict.get("counts_match"):
            raise dg.Failure(description=f"not publishing {sid}: its summaries failed `{COUNT_CHECK}` ("
                                         f"{verdict.get('counted')} rows accounted for, {verdict.get('landed')} "
                                         "landed); re-materialize f1/lap_summaries once the landing is complete")
        due, after = publish_once(kafka, lake.path, analytics_topic, sid, done.to_dict("records"))
        sent = len(due)
        wanted = {lap_key(sid, lap) for lap in done["lap"]}
        missing = sorted(wanted - set(after))
        twice = sorted(k for k, n in after.items() if n > 1)
        if sent:
            context.log.info(f"published {sent} lap(s) to {analytics_topic}: {[r['lap'] for r in due]}")
        return dg.MaterializeResult(
            metadata={"published_by_this_run": sent, "laps_on_topic": len(after),
                      "laps_published": dg.MetadataValue.json([int(r["lap"]) for r in due])},
            check_results=[dg.AssetCheckResult(
                check_name=PUBLISHED_CHECK, passed=not missing and not twice,
                metadata={"missing": dg.MetadataValue.json(missing[:50]), "more_than_once": dg.MetadataValue.json(
                    twice[:50]), "completed_laps": len(wanted)},
                description=f"{len(wanted) - len(missing)} of {len(wanted)} completed laps on {analytics_topic}"
                + (f"; {len(twice)} more than once" if twice else ""))],
        )

    return [*topic_specs, telemetry, lap_summaries, published_laps]


def analytics_counts(kafka: KafkaResource, topic: str, session_id: str | None = None) -> dict[str, int]:
    """How many messages each lap key has on the analytics topic (read from its start to its end)."""
    from sensors.kafka_events import TopicCursor, read_events

    identity = kafka.identity(topic)
    if identity is None:
        return {}
    read = read_events(kafka, topic, TopicCursor(), identity, max_messages=10_000_000, timeout_s=60)
    if not read.reached_end:
        raise dg.Failure(description=f"could not read {topic} to its end; not publishing (a lap could go out twice)")
    out: dict[str, int] = {}
    prefix = None if session_id is None else f"{session_id}:".encode()
    for ev in read.events:
        if ev.key is not None and (prefix is None or ev.key.startswith(prefix)):
            k = ev.key.decode("utf-8", "replace")
            out[k] = out.get(k, 0) + 1
    return out


def lap_message(row: dict) -> dict:
    """A lap summary as JSON: plain numbers, times in ISO-8601, NaN as null."""
    out = {}
    for k, v in row.items():
        if isinstance(v, pd.Timestamp):
            out[k] = v.isoformat()
        elif isinstance(v, float | np.floating):
            out[k] = None if not np.isfinite(v) else round(float(v), 4)
        elif isinstance(v, np.integer | np.bool_):
            out[k] = v.item()
        else:
            out[k] = v
    out["key"] = lap_key(row["session_id"], row["lap"])
    return out


def publish_once(kafka: KafkaResource, lake_root: Path, topic: str, session_id: str, rows: list[dict],
                 after_produce=None) -> tuple[list[dict], dict[str, int]]:
    """Publish the laps of `rows` that are not on `topic` yet; returns (published rows, counts by key after).

    Exactly once without transactions: one publisher at a time (a file lock in the lake, whatever the
    Dagster pool says), which reads the topic to its end and adds only the keys it lacks. A publisher
    killed after producing leaves either delivered messages (the next one sees them) or none (the next
    one sends them): never a second copy. `after_produce` is a crash point for tests.
    """
    with topic_lock(lake_root / "publish" / topic):
        before = analytics_counts(kafka, topic, session_id)
        due = [r for r in rows if lap_key(session_id, r["lap"]) not in before]
        sent = publish_laps(kafka, topic, due, after_produce)
        return due, (analytics_counts(kafka, topic, session_id) if sent else before)


def publish_laps(kafka: KafkaResource, topic: str, rows: list[dict], after_produce=None) -> int:
    if not rows:
        return 0
    producer = kafka.producer(**{"linger.ms": 5, "enable.idempotence": True})
    for r in rows:
        msg = lap_message(r)
        producer.produce(topic, json.dumps(msg).encode(), msg["key"].encode(), headers=_HEADERS)
    if after_produce is not None:
        after_produce(producer)
    left = producer.flush(30)
    if left:
        raise dg.Failure(description=f"{left} lap message(s) were not acknowledged by the broker within 30 s; "
                                     "the next materialization publishes what is missing")
    return len(rows)


def _lap_rows(table: pa.Table, tel: Telemetry, session_code: int, lap: int) -> dict[str, np.ndarray]:
    idx = np.flatnonzero((tel.session == session_code) & (tel.lap == lap))
    idx = idx[np.argsort(tel.ts[idx], kind="stable")]
    rows = {c: getattr(tel, c)[idx] for c in ("ts", "distance_m", "speed_kph", "g_lat", "g_long")}
    rows["x_m"] = table["x_m"].to_numpy()[idx]
    rows["y_m"] = table["y_m"].to_numpy()[idx]
    return rows


def _plot_metadata(table: pa.Table, tel: Telemetry, df: pd.DataFrame, sid: str) -> dict:
    """Track map and speed trace of the fastest lap (vs the best lap before it), and the g-g diagram."""
    from aero_assets.f1 import plots

    if df.empty or len(tel) == 0:
        return {}
    code = tel.sessions.index(sid) if sid in tel.sessions else 0
    flying = df[~df["out_lap"] & ~df["short_of_line"] & df["lap_time_s"].notna()]
    if flying.empty:
        return {}
    best = flying.loc[flying["lap_time_s"].idxmin()]
    before = flying[flying["lap"] < best["lap"]]
    ref = (before.loc[before["lap_time_s"].idxmin()] if len(before)
           else flying[flying["lap"] != best["lap"]].sort_values("lap_time_s").head(1).squeeze()
           if len(flying) > 1 else None)
    lap = _lap_rows(table, tel, code, int(best["lap"]))
    lap_label = f"lap {int(best['lap'])} ({best['lap_time_s']:.3f} s)"
    out = {"track_map": plots.track_map(lap, f"{sid}: fastest lap {int(best['lap'])} by speed")}
    if ref is not None and not isinstance(ref, pd.DataFrame):
        ref_rows = _lap_rows(table, tel, code, int(ref["lap"]))
        out["speed_trace"] = plots.speed_trace(lap, ref_rows, f"{sid}: fastest lap vs previous best", lap_label,
                                               f"lap {int(ref['lap'])} ({ref['lap_time_s']:.3f} s)")
    else:
        out["speed_trace"] = plots.speed_trace(lap, None, f"{sid}: fastest lap", lap_label, "")
    full = np.isin(tel.lap, flying["lap"].to_numpy()) & (tel.session == code)
    out["gg_diagram"] = plots.gg_diagram(tel.g_lat[full], tel.g_long[full], f"{sid}: g-g, {len(flying)} laps")
    return out
