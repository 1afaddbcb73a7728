"""Pure logic behind `windtunnel/raw_run`: find a run's lifecycle events, assemble its samples.

Landed files hold whatever each landing consumed; a run's raw table is the union of its files
from one topic incarnation, sorted by (channel, ts), with exact (channel, ts) repeats dropped
(a producer that retried can publish a block twice).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aero_assets.landing import landed_files, parse_file_name

START_PRECISION_NS = 1_000_000  # started_at is ISO-8601 (us) or epoch ms; samples carry ns


@dataclass(frozen=True)
class RunInfo:
    """The facts of a run's current attempt.

    A run id announced again (a second `run_started` in one topic incarnation) is a new attempt of
    that run: a rig re-running a configuration, or `aero simulate` reusing a session's ids. The
    newest attempt is the run; samples older than its start belong to earlier attempts and are not
    part of it. Attempts of one run must not overlap in time (a rig restarts a run, it does not
    interleave two).
    """

    run_id: str
    incarnation: str
    session_id: str | None
    baseline_run_id: str | None
    config: dict
    started_ns: int | None
    finished_ns: int | None
    expected_samples: int | None  # from run_finished; None while the run is still going
    attempts: int = 1

    @property
    def finished(self) -> bool:
        return self.expected_samples is not None


def read_run_events(runs_topic_dir: Path, run_id: str) -> pa.Table | None:
    files = landed_files(runs_topic_dir, split=("run_id", run_id))
    if not files:
        return None
    tables = []
    for f in files:
        t = pq.read_table(f)
        t = t.append_column("_incarnation", pa.array([parse_file_name(f.name)[0]] * t.num_rows))
        tables.append(t.append_column("_landed_ns", pa.array([f.stat().st_mtime_ns] * t.num_rows, pa.int64())))
    return pa.concat_tables(tables, promote_options="default")


def run_info(events: pa.Table, run_id: str) -> RunInfo:
    """The run's newest incarnation and the started/finished facts of its newest attempt there."""
    i = events.schema.get_field_index("ts")
    rows = events.set_column(i, "ts", events["ts"].cast(pa.int64())).to_pylist()  # ts as epoch ns
    finished = [r for r in rows if r["event"] == "run_finished"]
    started = [r for r in rows if r["event"] == "run_started"]
    # the incarnation landed last, as for the samples (`newest_incarnation`): event clocks can go back
    anchor = max(rows, key=lambda r: (r.get("_landed_ns", 0), r["_offset"]))
    inc = anchor["_incarnation"]
    # one key = one partition: offsets order a run's events within an incarnation
    starts = sorted((r for r in started if r["_incarnation"] == inc), key=lambda r: r["_offset"])
    st = starts[-1] if starts else None
    ends = [r for r in finished if r["_incarnation"] == inc]
    after = [r for r in ends if st is None or r["_offset"] > st["_offset"]]
    if not after and len(starts) == 1:
        after = ends  # a single attempt whose run_finished overtook its run_started (another producer)
    fin = max(after, key=lambda r: r["_offset"], default=None)

    return RunInfo(
        run_id=run_id,
        incarnation=inc,
        session_id=st["session_id"] if st else None,
        baseline_run_id=st["baseline_run_id"] if st else None,
        config=json.loads(st["config"]) if st and st["config"] else {},
        started_ns=st["ts"] if st else None,
        finished_ns=fin["ts"] if fin else None,
        expected_samples=int(fin["sample_count"]) if fin else None,
        attempts=max(1, len(starts)),
    )


def newest_incarnation(files: list[Path]) -> str | None:
    """The samples topic's incarnation that last landed data for a run (a republished run wins)."""
    newest: dict[str, float] = {}
    for f in files:
        inc = parse_file_name(f.name)[0]
        newest[inc] = max(newest.get(inc, 0.0), f.stat().st_mtime)
    return max(newest, key=newest.__getitem__) if newest else None


@dataclass
class Assembled:
    table: pa.Table  # ts, channel, value sorted by (channel, ts), unique (channel, ts)
    duplicates: int
    incarnation: str | None
    repaired: dict[str, dict[str, int]]  # per channel: duplicates dropped, samples that arrived out of order
    earlier_attempts: int = 0  # samples left out because they predate the current attempt


def assemble_samples(samples_topic_dir: Path, run_id: str, since_ns: int | None = None) -> Assembled:
    """All landed samples of the run from one topic incarnation, sorted and de-duplicated.

    `since_ns`: the start of the run's current attempt when it has had several; older samples
    belong to an earlier attempt and are left out (counted in `earlier_attempts`).
    Arrival order is the landing's offset order; a sample older than its channel's previous one
    arrived out of order. Both repairs are counted per channel so QC can report them.
    """
    files = landed_files(samples_topic_dir, split=("run_id", run_id))
    incarnation = newest_incarnation(files)
    files = [f for f in files if parse_file_name(f.name)[0] == incarnation]
    schema = pa.schema([("ts", pa.timestamp("ns", tz="UTC")), ("channel", pa.string()), ("value", pa.float64())])
    if not files:
        return Assembled(schema.empty_table(), 0, None, {})
    table = pa.concat_tables([pq.read_table(f, columns=["ts", "channel", "value"]) for f in files])
    earlier = 0
    if since_ns is not None:
        # started_at travels as ISO-8601 (microseconds) or epoch ms: allow its rounding, not more
        current = pc.greater_equal(table["ts"].cast(pa.int64()), since_ns - START_PRECISION_NS)
        earlier = table.num_rows - pc.sum(current).as_py() if table.num_rows else 0
        table = table.filter(current)
        if not table.num_rows:
            return Assembled(schema.empty_table(), 0, incarnation, {}, earlier)
    enc = pc.dictionary_encode(table["channel"]).combine_chunks()
    names = np.asarray(enc.dictionary.to_pylist(), dtype=object)
    rank = np.empty(len(names), dtype=np.int32)
    rank[np.argsort(names)] = np.arange(len(names), dtype=np.int32)
    codes = rank[enc.indices.to_numpy()]
    ts = table["ts"].cast(pa.int64()).to_numpy()
    by_channel = np.argsort(codes, kind="stable")  # arrival order kept within each channel
    cc, tc = codes[by_channel], ts[by_channel]
    late = (cc[1:] == cc[:-1]) & (tc[1:] < tc[:-1])
    out_of_order = np.bincount(cc[1:][late], minlength=len(names))
    order = np.lexsort((ts, codes))  # stable: arrival order within one (channel, ts)
    codes, ts = codes[order], ts[order]
    # of repeated (channel, ts), the last to arrive wins: a producer's retry repeats the same value, a
    # re-run with the same timestamps (a new attempt of the run) brings new values that must replace the old
    keep = np.ones(order.size, dtype=bool)
    keep[:-1] = (codes[1:] != codes[:-1]) | (ts[1:] != ts[:-1])
    idx = order[keep]
    out = pa.table({
        "ts": pa.array(ts[keep]).cast(schema.field("ts").type),
        "channel": pa.DictionaryArray.from_arrays(pa.array(codes[keep]), pa.array(sorted(names))).cast(pa.string()),
        "value": table["value"].take(pa.array(idx)),
    })
    dups = np.bincount(codes[~keep], minlength=len(names))
    sorted_names = sorted(names)
    repaired = {sorted_names[i]: {"duplicates": int(dups[i]), "out_of_order": int(out_of_order[i])}
                for i in np.flatnonzero(dups + out_of_order)}
    return Assembled(out, int(order.size - idx.size), incarnation, repaired, int(earlier))


def session_runs(runs_topic_dir: Path, session_id: str) -> list[str]:
    """Run ids of a session in the order they started (from the landed lifecycle events)."""
    import pyarrow.dataset as ds

    if not runs_topic_dir.exists():
        return []
    # run ids are strings: without a schema, hive partitioning would turn "007" into 7
    partitioning = ds.partitioning(pa.schema([("run_id", pa.string())]), flavor="hive")
    dataset = ds.dataset(runs_topic_dir, format="parquet", partitioning=partitioning)
    t = dataset.to_table(columns=["run_id", "ts"],
                         filter=(ds.field("event") == "run_started") & (ds.field("session_id") == session_id))
    first: dict[str, int] = {}
    for run_id, ts in zip(t["run_id"].to_pylist(), t["ts"].cast(pa.int64()).to_pylist(), strict=True):
        first[run_id] = min(ts, first.get(run_id, ts))
    return sorted(first, key=lambda r: (first[r], r))
