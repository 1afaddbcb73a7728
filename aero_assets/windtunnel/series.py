"""A run as per-channel arrays, and the steady (constant tunnel speed) part of it.

`raw_run` files are sorted by (channel, ts), so splitting into channels is a search for the
boundaries of the dictionary codes: no per-sample work in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass
class RunSeries:
    """Per channel: timestamps (epoch ns, increasing) and values; plus the run's time span."""

    t: dict[str, np.ndarray]
    v: dict[str, np.ndarray]
    start_ns: int
    end_ns: int

    @property
    def channels(self) -> list[str]:
        return list(self.t)

    @property
    def span_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def samples(self) -> int:
        return int(sum(a.size for a in self.v.values()))

    def grid_size(self, rate_hz: float) -> int:
        """Samples a channel at `rate_hz` has over the run's span, both ends included."""
        return int(np.floor(self.span_s * rate_hz + 1e-6)) + 1  # 1e-6: 0.999999.. * rate is still a sample

    def seconds(self, channel: str) -> np.ndarray:
        return (self.t[channel] - self.start_ns) / 1e9


def series_from_table(table: pa.Table) -> RunSeries:
    """Split a long (ts, channel, value) table sorted by (channel, ts) into per-channel arrays."""
    if table.num_rows == 0:
        return RunSeries({}, {}, 0, 0)
    ch = table["channel"].combine_chunks()
    enc = ch if pa.types.is_dictionary(ch.type) else ch.dictionary_encode()
    codes = enc.indices.to_numpy(zero_copy_only=False)
    names = enc.dictionary.to_pylist()
    ts = table["ts"].combine_chunks().cast(pa.int64()).to_numpy()
    vals = table["value"].combine_chunks().to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    cuts = np.flatnonzero(np.diff(codes)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [codes.size]])
    t, v = {}, {}
    for a, b in zip(starts, ends, strict=True):  # one iteration per channel
        name = names[codes[a]]
        if name in t:  # input not grouped by channel: fall back to a stable sort once
            return series_from_table(table.sort_by([("channel", "ascending"), ("ts", "ascending")]))
        t[name], v[name] = ts[a:b], vals[a:b]
    return RunSeries(t, v, int(ts.min()), int(ts.max()))


def read_series(path: Path) -> RunSeries:
    return series_from_table(pq.read_table(path, columns=["ts", "channel", "value"], read_dictionary=["channel"]))


def steady_window(series: RunSeries, lo: float | None = None, hi: float | None = None,
                  speed_channel: str = "FLOW_V", margin_s: float = 0.25) -> tuple[float, float, str]:
    """(start, end) in seconds since run start of the constant-speed hold, and how it was found.

    The hold is where the tunnel speed is within 3 % of its typical plateau value (the 75th
    percentile of in-range samples: ramps take less than a quarter of a run). Falls back to the
    middle 60 % of the run when the speed channel is absent or shows no plateau.
    """
    span = series.span_s
    fallback = (0.2 * span, 0.8 * span, "middle 60% of the run (no usable speed channel)")
    if speed_channel not in series.v or span <= 0:
        return fallback
    t, v = series.seconds(speed_channel), series.v[speed_channel]
    ok = np.isfinite(v)
    if lo is not None and hi is not None:
        ok &= (v >= lo) & (v <= hi)
    if ok.sum() < 10:
        return fallback
    ref = np.percentile(v[ok], 75)
    if ref <= 0:
        return fallback
    hold = ok & (v >= 0.97 * ref) & (v <= 1.03 * ref)
    idx = np.flatnonzero(hold)
    if idx.size < 10:
        return fallback
    a, b = t[idx[0]] + margin_s, t[idx[-1]] - margin_s
    if b - a < 0.1 * span:
        return fallback
    return float(a), float(b), f"{speed_channel} within 3% of {ref:.2f}"
