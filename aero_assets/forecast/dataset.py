"""From landed weather readings to hourly series and leakage-free windowed training sets.

Two steps, both pure:

* `hourly` turns whatever landed (re-deliveries, out-of-order batches, irregular intervals, holes)
  into one row per station per hour on the hour. Short holes (<= 3 h) are interpolated because a
  forecaster loses little from a straight line over three hours of weather; longer ones are left
  NaN and reported by `gaps`, because inventing a day of temperatures would teach the model a
  fiction and hide an outage from the operator.
* `build_training_set` cuts one hourly series into (lookback -> horizon) windows with NumPy stride
  tricks and splits them *by time*. A window is kept in a part only if every point it touches
  (inputs and targets) lies in that part, so no target of the validation/test part was ever seen
  as an input or target during training. The scaler is fitted on the train part only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

NS_PER_HOUR = 3_600 * 1_000_000_000
VALUE_COLUMNS = ("temperature_c", "windspeed_ms", "pressure_hpa")
MAX_INTERPOLATED_GAP_H = 3
SPLIT_NAMES = ("train", "validation", "test")


def _as_ns(values: pd.Series | pd.Index | np.ndarray) -> np.ndarray:
    """Timestamps as int64 nanoseconds since the epoch, whether they came as ints or datetimes."""
    if isinstance(values, pd.DatetimeIndex) or pd.api.types.is_datetime64_any_dtype(values):
        index = pd.DatetimeIndex(values)
        if index.tz is not None:
            index = index.tz_convert("UTC").tz_localize(None)
        return index.asi8.astype(np.int64)
    return np.asarray(values, dtype=np.int64)


def _nan_runs(isna: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and end (exclusive) positions of the runs of True in a boolean array."""
    padded = np.concatenate(([False], isna, [False])).astype(np.int8)
    edges = np.diff(padded)
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def hourly(readings: pd.DataFrame, *, max_gap_h: int = MAX_INTERPOLATED_GAP_H) -> pd.DataFrame:
    """Hourly means per station on the hour, with duplicates resolved and short gaps interpolated.

    * same station + ts landed twice -> the row that landed last (row order = landing order) wins,
      since a re-delivery carries the corrected reading;
    * out-of-order rows are sorted; each reading falls in the hour that contains it (floor);
    * every hour between a station's first and last reading gets a row; hours without a reading
      are NaN, runs of at most `max_gap_h` NaN hours between two observed hours are linearly
      interpolated (per column), longer runs stay NaN (see `gaps`).

    Returns columns station, ts (int64 ns, on the hour), temperature_c, windspeed_ms,
    pressure_hpa, n_readings (temperature readings averaged into the hour) and interpolated
    (the temperature of that hour was filled in, not measured).
    """
    out_columns = ["station", "ts", *VALUE_COLUMNS, "n_readings", "interpolated"]
    if readings.empty:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in out_columns})
    frame = pd.DataFrame({"station": readings["station"].astype(str), "ts": _as_ns(readings["ts"])})
    for column in VALUE_COLUMNS:
        frame[column] = (
            pd.to_numeric(readings[column], errors="coerce").astype(float).to_numpy() if column in readings else np.nan
        )
    frame = frame.drop_duplicates(["station", "ts"], keep="last")
    frame["ts"] = (frame["ts"] // NS_PER_HOUR) * NS_PER_HOUR
    grouped = frame.groupby(["station", "ts"], sort=True)
    means = grouped[list(VALUE_COLUMNS)].mean()
    means["n_readings"] = grouped["temperature_c"].count()

    # A full hourly grid per station, in integer arithmetic: np.arange over ns-epoch values sizes
    # itself in float64 and loses the last hour once a span exceeds 2**53 ns (about 104 days).
    bounds = frame.groupby("station")["ts"].agg(["min", "max"])
    hours = ((bounds["max"] - bounds["min"]) // NS_PER_HOUR + 1).to_numpy()
    first_row = np.repeat(np.cumsum(hours) - hours, hours)
    grid_ts = np.repeat(bounds["min"].to_numpy(), hours) + (np.arange(hours.sum()) - first_row) * NS_PER_HOUR
    grid = pd.MultiIndex.from_arrays([np.repeat(bounds.index.to_numpy(), hours), grid_ts], names=["station", "ts"])
    out = means.reindex(grid)
    out["n_readings"] = out["n_readings"].fillna(0).astype(np.int64)
    out = out.reset_index()

    was_missing = out["temperature_c"].isna().to_numpy()
    station_codes = pd.factorize(out["station"])[0]
    for column in VALUE_COLUMNS:
        isna = out[column].isna().to_numpy()
        if not isna.any():
            continue
        # Run ids change whenever missing-ness or the station changes; short runs get filled.
        run_id = np.cumsum(
            np.concatenate(([True], (isna[1:] != isna[:-1]) | (station_codes[1:] != station_codes[:-1])))
        )
        run_length = np.bincount(run_id)[run_id]
        short = isna & (run_length <= max_gap_h)
        if not short.any():
            continue
        filled = out.groupby("station", sort=False)[column].transform(
            lambda s: s.interpolate(method="linear", limit_area="inside")
        )
        out.loc[short, column] = filled[short]
    out["interpolated"] = was_missing & out["temperature_c"].notna().to_numpy()
    return out[out_columns]


def gaps(
    hourly_frame: pd.DataFrame, *, station: str | None = None, column: str = "temperature_c"
) -> list[tuple[int, int]]:
    """The hours still missing after `hourly` as [start, end) int-ns intervals, oldest first.

    `start` is the first missing hour and `end` the first hour observed again, so `end - start`
    is the length of the hole. With several stations in the frame, pick one with `station`:
    intervals of different stations in one list would be ambiguous.
    """
    frame = hourly_frame
    if station is not None:
        frame = frame[frame["station"] == station]
    elif frame["station"].nunique() > 1:
        raise ValueError("hourly frame holds several stations; pass station=")
    frame = frame.sort_values("ts")
    ts = frame["ts"].to_numpy(dtype=np.int64)
    starts, ends = _nan_runs(frame[column].isna().to_numpy())
    return [(int(ts[s]), int(ts[e - 1] + NS_PER_HOUR)) for s, e in zip(starts, ends, strict=True)]


def station_series(hourly_frame: pd.DataFrame, station: str, column: str = "temperature_c") -> pd.Series:
    """One station's hourly column as a Series indexed by int-ns timestamps (the input of `build_training_set`)."""
    frame = hourly_frame[hourly_frame["station"] == station].sort_values("ts")
    return pd.Series(frame[column].to_numpy(dtype=float), index=frame["ts"].to_numpy(dtype=np.int64), name=column)


@dataclass(frozen=True, eq=False)  # arrays inside: identity equality, compare to_arrays() instead
class TrainingSet:
    """Windowed, scaled sequences of one hourly series, split by time.

    `X` (n, lookback) and `y` (n, horizon) are in scaled units ((v - mean) / std, fitted on the
    train part); `target_ts` (n, horizon) are the int-ns timestamps of each target and `split`
    (n,) says which part each window is in (0 train, 1 validation, 2 test). Windows are in time
    order. float64 throughout so stored sets round-trip exactly; cast for torch at the edge.
    """

    X: np.ndarray
    y: np.ndarray
    target_ts: np.ndarray
    split: np.ndarray
    mean: float
    std: float
    lookback: int
    horizon: int
    boundaries_ns: tuple[int, int]  # first timestamp of the validation part and of the test part
    n_dropped_nan: int = 0  # windows touching a NaN (a long gap)
    n_dropped_boundary: int = 0  # windows straddling a split boundary
    split_fractions: tuple[float, float, float] = field(default=(0.7, 0.15, 0.15))

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X, y, target_ts) of "train", "validation" or "test", scaled."""
        mask = self.split == SPLIT_NAMES.index(name)
        return self.X[mask], self.y[mask], self.target_ts[mask]

    def raw(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X, y, target_ts) of a part in degC: what baselines and metrics are computed on."""
        X, y, target_ts = self.part(name)
        return self.unscale(X), self.unscale(y), target_ts

    def unscale(self, values: np.ndarray) -> np.ndarray:
        """Scaled units back to the series' units (model outputs included)."""
        return np.asarray(values) * self.std + self.mean

    def scale(self, values: np.ndarray) -> np.ndarray:
        """Series units to the scaled units the model sees (with the train-part statistics)."""
        return (np.asarray(values) - self.mean) / self.std

    def counts(self) -> dict[str, int]:
        """Windows per part and dropped windows, for run metadata."""
        per_part = np.bincount(self.split.astype(np.int64), minlength=3)
        return {
            **{name: int(per_part[i]) for i, name in enumerate(SPLIT_NAMES)},
            "dropped_nan": self.n_dropped_nan,
            "dropped_boundary": self.n_dropped_boundary,
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (np.savez-able; each row-aligned array is a Parquet column or list column)."""
        return {
            "X": self.X,
            "y": self.y,
            "target_ts": self.target_ts,
            "split": self.split,
            "mean": np.array(self.mean),
            "std": np.array(self.std),
            "lookback": np.array(self.lookback),
            "horizon": np.array(self.horizon),
            "boundaries_ns": np.asarray(self.boundaries_ns, dtype=np.int64),
            "n_dropped_nan": np.array(self.n_dropped_nan),
            "n_dropped_boundary": np.array(self.n_dropped_boundary),
            "split_fractions": np.asarray(self.split_fractions, dtype=float),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> TrainingSet:
        """The inverse of `to_arrays` (accepts an open np.load(...) NpzFile too)."""
        return cls(
            X=np.asarray(arrays["X"], dtype=float),
            y=np.asarray(arrays["y"], dtype=float),
            target_ts=np.asarray(arrays["target_ts"], dtype=np.int64),
            split=np.asarray(arrays["split"], dtype=np.int8),
            mean=float(arrays["mean"]),
            std=float(arrays["std"]),
            lookback=int(arrays["lookback"]),
            horizon=int(arrays["horizon"]),
            boundaries_ns=tuple(int(b) for b in np.asarray(arrays["boundaries_ns"])),
            n_dropped_nan=int(arrays["n_dropped_nan"]),
            n_dropped_boundary=int(arrays["n_dropped_boundary"]),
            split_fractions=tuple(float(f) for f in np.asarray(arrays["split_fractions"])),
        )


def build_training_set(
    hourly_temp: pd.Series,
    lookback: int = 24,
    horizon: int = 1,
    splits: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> TrainingSet:
    """Windows (lookback inputs -> horizon targets) of a regular hourly series, split by time.

    The series' points are split first (train = the first splits[0] of the hours, then
    validation, then test); a window belongs to a part only if all its lookback + horizon points
    are in it, the others are dropped and counted, as are windows touching a NaN. The index may be
    int ns or datetimes, and must be regularly spaced (use `hourly` + `station_series` first).
    """
    if lookback < 1 or horizon < 1:
        raise ValueError("lookback and horizon must be >= 1")
    if len(splits) != 3 or min(splits) < 0 or not np.isclose(sum(splits), 1.0):
        raise ValueError("splits must be three non-negative fractions summing to 1")
    series = hourly_temp.sort_index()
    ts = _as_ns(series.index)
    values = series.to_numpy(dtype=float)
    if len(ts) > 1 and np.unique(np.diff(ts)).size != 1:
        raise ValueError("the series is not regularly spaced; resample with hourly() first")
    n_points = len(values)
    width = lookback + horizon
    b1 = int(np.floor(n_points * splits[0] + 1e-9))
    b2 = int(np.floor(n_points * (splits[0] + splits[1]) + 1e-9))
    step = int(ts[1] - ts[0]) if n_points > 1 else NS_PER_HOUR
    first_ts = int(ts[0]) if n_points else 0
    boundaries_ns = (first_ts + b1 * step, first_ts + b2 * step)

    train_values = values[:b1]
    mean = float(np.nanmean(train_values)) if np.isfinite(train_values).any() else 0.0
    std = float(np.nanstd(train_values)) if np.isfinite(train_values).any() else 1.0
    if not np.isfinite(std) or std == 0.0:
        std = 1.0  # a constant train part: keep values finite rather than divide by zero

    n_windows = max(n_points - width + 1, 0)
    if n_windows == 0:
        empty = np.empty((0, lookback)), np.empty((0, horizon))
        return TrainingSet(
            X=empty[0],
            y=empty[1],
            target_ts=np.empty((0, horizon), dtype=np.int64),
            split=np.empty(0, np.int8),
            mean=mean,
            std=std,
            lookback=lookback,
            horizon=horizon,
            boundaries_ns=boundaries_ns,
            split_fractions=tuple(splits),
        )
    windows = sliding_window_view(values, width)  # (n_windows, width), a view: no copy yet
    ts_windows = sliding_window_view(ts, width)
    part_of_point = np.searchsorted(np.array([b1, b2]), np.arange(n_points), side="right")
    first_part = part_of_point[:n_windows]
    last_part = part_of_point[width - 1 :]
    within_part = first_part == last_part
    finite = np.isfinite(windows).all(axis=1)
    keep = within_part & finite

    kept = windows[keep]
    return TrainingSet(
        X=(kept[:, :lookback] - mean) / std,
        y=(kept[:, lookback:] - mean) / std,
        target_ts=np.ascontiguousarray(ts_windows[keep, lookback:]),
        split=first_part[keep].astype(np.int8),
        mean=mean,
        std=std,
        lookback=lookback,
        horizon=horizon,
        boundaries_ns=boundaries_ns,
        n_dropped_nan=int((within_part & ~finite).sum()),
        n_dropped_boundary=int((~within_part).sum()),
        split_fractions=tuple(float(f) for f in splits),
    )
