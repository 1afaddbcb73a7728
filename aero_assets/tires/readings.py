"""Reading landed tire readings back from the lake by event time, with their log position.

Landed files hold whatever a landing chunk consumed, so one hour's readings are spread over many
files (and late ones over later files). The Parquet row-group statistics of `ts` let pyarrow skip
files that cannot hold the requested span without reading them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from aero_assets.landing_state import parse_file_name
from aero_assets.tires.decoder import SCHEMA

COLUMNS = SCHEMA.names
HOUR_NS = 3_600_000_000_000


def landed_readings(topic_dir: Path, lo_ns: int, hi_ns: int | None = None, *, position: bool = False) -> pa.Table:
    """Readings with `lo_ns <= ts < hi_ns`; with `position`, also `_partition` and `_offset` (log order)."""
    files = sorted(p for p in topic_dir.glob("*.parquet") if parse_file_name(p.name) is not None)
    cols = [*COLUMNS, "_offset"] if position else COLUMNS
    schema = SCHEMA.append(pa.field("_offset", pa.int64()))
    empty = schema.empty_table().select(cols)
    if position:
        empty = empty.append_column("_partition", pa.array([], pa.int32()))
    if not files:
        return empty
    lo = pa.scalar(lo_ns, pa.int64()).cast(SCHEMA.field("ts").type)
    cond = ds.field("ts") >= lo
    if hi_ns is not None:
        cond = cond & (ds.field("ts") < pa.scalar(hi_ns, pa.int64()).cast(SCHEMA.field("ts").type))
    dataset = ds.dataset([str(f) for f in files], format="parquet", schema=schema)
    tables = []
    for fragment in dataset.get_fragments():
        t = fragment.to_table(columns=cols, filter=cond)
        if t.num_rows:
            if position:
                partition = parse_file_name(Path(fragment.path).name)[1]
                t = t.append_column("_partition", pa.array(np.full(t.num_rows, partition, dtype=np.int32)))
            tables.append(t)
    return pa.concat_tables(tables) if tables else empty


def hours_of(ts: pa.ChunkedArray | pa.Array) -> list[int]:
    """Distinct hour starts (epoch ns) of timestamps."""
    if len(ts) == 0:
        return []
    ns = pc.cast(ts, pa.int64()).to_numpy() if isinstance(ts, pa.Array) else ts.cast(pa.int64()).to_numpy()
    return sorted(int(h) * HOUR_NS for h in np.unique(np.floor_divide(ns, HOUR_NS)))
