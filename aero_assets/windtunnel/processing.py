"""Processing of one run: despike, handle gaps, low-pass filter, resample all channels to one time base.

1. Invalid samples are dropped: non-finite, spikes and out-of-range samples (the same masks QC uses).
2. Each channel is interpolated onto its own nominal grid (filling holes for the filter only).
3. Channels of one rate are stacked and brought to the target rate in one call of SciPy's
   polyphase resampler (anti-aliasing FIR, linear phase), then a zero-phase Butterworth low-pass
   (`sosfiltfilt`) is applied to the whole (channels x time) array.
4. Target samples inside a hole shorter than `max_interp_gap_s` are flagged `interpolated`; inside
   a longer one they are NaN and flagged `gap` - long gaps stay gaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pyarrow as pa

from aero_assets.windtunnel.catalog import Catalog
from aero_assets.windtunnel.qc import invalid_mask
from aero_assets.windtunnel.series import RunSeries

OK, INTERPOLATED, GAP = 0, 1, 2
FLAG_NAMES = ("ok", "interpolated", "gap")


@dataclass(frozen=True)
class ProcessingConfig:
    target_rate_hz: int = 100
    cutoff_hz: float = 20.0
    filter_order: int = 4
    max_interp_gap_s: float = 0.05
    spike_z: float = 12.0


@dataclass
class ProcessedRun:
    start_ns: int
    rate_hz: int
    channels: list[str]
    values: np.ndarray  # (channels, time), NaN inside long gaps
    flags: np.ndarray  # (channels, time) int8: OK / INTERPOLATED / GAP
    dropped: dict[str, int]  # invalid samples removed per channel

    @property
    def t_s(self) -> np.ndarray:
        return np.arange(self.values.shape[1]) / self.rate_hz

    def channel(self, name: str) -> np.ndarray:
        return self.values[self.channels.index(name)]

    def as_series(self) -> RunSeries:
        t = self.start_ns + np.round(self.t_s * 1e9).astype(np.int64)
        return RunSeries({c: t for c in self.channels}, dict(zip(self.channels, self.values, strict=True)),
                         self.start_ns, int(t[-1]) if t.size else self.start_ns)

    def table(self) -> pa.Table:
        """Long format (ts, channel, value, flag), sorted by channel then time, like raw_run."""
        n_ch, n_t = self.values.shape
        ts = self.start_ns + np.round(self.t_s * 1e9).astype(np.int64)
        codes = np.repeat(np.arange(n_ch, dtype=np.int32), n_t)
        return pa.table({
            "ts": pa.array(np.tile(ts, n_ch)).cast(pa.timestamp("ns", tz="UTC")),
            "channel": pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(self.channels)),
            "value": pa.array(self.values.ravel(), from_pandas=True),
            "flag": pa.DictionaryArray.from_arrays(pa.array(self.flags.ravel().astype(np.int32)),
                                                   pa.array(list(FLAG_NAMES))),
        })

    @classmethod
    def from_table(cls, table: pa.Table) -> ProcessedRun:
        """Inverse of `table()`: every channel shares the same grid, so a reshape suffices.

        The rate is the grid's: read from the first two timestamps of the first channel.
        """
        ch = table["channel"].combine_chunks()
        enc = ch if pa.types.is_dictionary(ch.type) else ch.dictionary_encode()
        codes = enc.indices.to_numpy(zero_copy_only=False)
        names = enc.dictionary.to_pylist()
        order = [names[c] for c in codes[np.r_[0, np.flatnonzero(np.diff(codes)) + 1]]] if codes.size else []
        n_ch = len(order)
        n_t = table.num_rows // n_ch if n_ch else 0
        values = table["value"].combine_chunks().to_numpy(zero_copy_only=False).astype(np.float64).reshape(n_ch, n_t)
        fl = table["flag"].combine_chunks()
        fl = fl if pa.types.is_dictionary(fl.type) else fl.dictionary_encode()
        lut = np.array([FLAG_NAMES.index(n) for n in fl.dictionary.to_pylist()], np.int8)
        flags = lut[fl.indices.to_numpy(zero_copy_only=False)]
        ts = table["ts"].slice(0, 2).cast(pa.int64()).to_pylist()
        start = ts[0] if ts else 0
        rate_hz = round(1e9 / (ts[1] - ts[0])) if n_t > 1 and ts[1] > ts[0] else ProcessingConfig.target_rate_hz
        return cls(start, rate_hz, order, values, flags.reshape(n_ch, n_t), {})


def _hole_flags(tv: np.ndarray, grid: np.ndarray, period: float, max_gap: float) -> np.ndarray:
    """Flag target times that fall between valid samples further apart than one nominal period."""
    flags = np.zeros(grid.size, np.int8)
    if tv.size == 0:
        flags[:] = GAP
        return flags
    i = np.searchsorted(tv, grid, side="right") - 1
    inside = (i >= 0) & (i < tv.size - 1)
    length = np.full(grid.size, np.inf)
    length[inside] = tv[i[inside] + 1] - tv[i[inside]]
    # before the first / after the last valid sample: the distance to it counts as the hole
    length[i < 0] = 2 * (tv[0] - grid[i < 0])
    length[i >= tv.size - 1] = 2 * (grid[i >= tv.size - 1] - tv[-1])
    hole = length > 1.5 * period
    flags[hole] = INTERPOLATED
    flags[hole & (length > max_gap)] = GAP
    return flags


def process_run(series: RunSeries, catalog: Catalog, cfg: ProcessingConfig | None = None) -> ProcessedRun:
    from scipy.signal import butter, resample_poly, sosfiltfilt  # heavy: not at Definitions load

    cfg = cfg or ProcessingConfig()
    target = cfg.target_rate_hz
    n_t = series.grid_size(target)
    grid = np.arange(n_t) / target
    channels = series.channels
    values = np.full((len(channels), n_t), np.nan)
    flags = np.full((len(channels), n_t), GAP, np.int8)
    dropped: dict[str, int] = {}
    groups: dict[float, list[int]] = {}
    cleaned: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}
    for i, ch in enumerate(channels):  # per channel (72), never per sample
        v = series.v[ch]
        t = series.seconds(ch)
        bad = invalid_mask(ch, v, catalog, cfg.spike_z)
        dropped[ch] = int(bad.sum())
        tv, vv = t[~bad], v[~bad]
        known = ch in catalog.frame.index
        rate = float(catalog.rate(ch)) if known else (1.0 / float(np.median(np.diff(t))) if t.size > 1 else 0.0)
        if tv.size < 2 or rate <= 0:
            continue
        cleaned[i] = (tv, vv, rate)
        flags[i] = _hole_flags(tv, grid, 1.0 / rate, cfg.max_interp_gap_s)
        groups.setdefault(rate, []).append(i)

    for rate, idx in groups.items():
        ratio = Fraction(target / rate).limit_denominator(1000)
        if rate <= target or ratio.numerator * 1000 < ratio.denominator:
            for i in idx:
                tv, vv, _ = cleaned[i]
                values[i] = np.interp(grid, tv, vv)
            continue
        n_native = series.grid_size(rate)
        native = np.arange(n_native) / rate
        stack = np.empty((len(idx), n_native))
        for row, i in enumerate(idx):
            stack[row] = np.interp(native, cleaned[i][0], cleaned[i][1])
        down = resample_poly(stack, ratio.numerator, ratio.denominator, axis=1, padtype="line")
        m = min(n_t, down.shape[1])
        values[idx, :m] = down[:, :m]
        if m < n_t:
            values[idx, m:] = down[:, m - 1 : m]

    if 0 < cfg.cutoff_hz < target / 2 and n_t > 3 * (cfg.filter_order + 1) * 2:
        sos = butter(cfg.filter_order, cfg.cutoff_hz, fs=target, output="sos")
        rows = np.isfinite(values).all(axis=1)
        if rows.any():
            values[rows] = sosfiltfilt(sos, values[rows], axis=1)
    values[flags == GAP] = np.nan
    return ProcessedRun(series.start_ns, target, channels, values, flags, dropped)
