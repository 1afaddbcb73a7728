"""Silverstone Grand Prix circuit (5.891 km, run clockwise) as data and as a closed 1 m centreline.

The layout is a table of constant-radius corners and straights in lap order from the start/finish
line on the Hamilton Straight. Corner lengths are ``radius * angle``; the angles are picked so the
signed turning sums to exactly -360 degrees (clockwise), which a closed lap must have. The table is
not surveyed data: radii are the effective racing-line radii a point-mass model needs (Copse ~180 m,
The Loop ~28 m, ...), so speeds come out realistic even where the real kerb geometry differs.

Building the centreline:

1. the straights are lengthened/shortened (least-norm, weighted by their length) so that the
   polyline of the table closes in x and y and the lap is exactly 5891.0 m long: with fixed corner
   angles the straight directions are fixed, so closure is a 3-equation linear problem;
2. curvature is sampled on the 1 m grid and smoothed with a 30 m circular window, a stand-in for
   the clothoid entries/exits of real corners (a step in curvature would be a step in lateral g);
3. the small heading error left by sampling is removed by scaling curvature in proportion to
   ``|curvature|`` (straights stay straight), so the total turning is exactly -2*pi;
4. the residual position error (metres, from the smoothing) is removed by a linear correction.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

LENGTH_M = 5891.0
GRID_STEP_M = 1.0
_SMOOTH_M = 30


@dataclass(frozen=True)
class Segment:
    """One row of the layout table: a constant-radius corner ("L"/"R") or a straight ("S", radius None)."""

    name: str
    length_m: float
    radius_m: float | None
    direction: str

    @property
    def angle_rad(self) -> float:
        """Signed turning angle; clockwise (right-hand) corners turn negative."""
        if self.radius_m is None:
            return 0.0
        sign = -1.0 if self.direction == "R" else 1.0
        return sign * self.length_m / self.radius_m


def _corner(name: str, direction: str, radius_m: float, angle_deg: float) -> Segment:
    return Segment(name, radius_m * math.radians(angle_deg), radius_m, direction)


def _straight(name: str, length_m: float) -> Segment:
    return Segment(name, float(length_m), None, "S")


# Nominal table in lap order. Straight lengths are re-balanced by `_balanced_segments` (tens of metres
# at most) so the lap closes and sums to LENGTH_M; corner angles sum to -360 deg exactly.
NOMINAL_SEGMENTS: tuple[Segment, ...] = (
    _straight("Hamilton Straight (line to Abbey)", 300),
    _corner("Abbey", "R", 200, 80),
    _straight("Abbey-Farm", 110),
    _corner("Farm", "L", 250, 25),
    _straight("Farm-Village", 240),
    _corner("Village", "R", 45, 100),
    _straight("Village-The Loop", 70),
    _corner("The Loop", "L", 28, 140),
    _straight("The Loop-Aintree", 50),
    _corner("Aintree", "L", 90, 45),
    _straight("Wellington Straight", 770),
    _corner("Brooklands", "L", 45, 90),
    _straight("Brooklands-Luffield", 60),
    _corner("Luffield", "R", 50, 200),
    _straight("Luffield-Woodcote", 140),
    _corner("Woodcote", "R", 200, 50),
    _straight("National Straight", 420),
    _corner("Copse", "R", 180, 100),
    _straight("Copse-Maggotts", 240),
    _corner("Maggotts", "L", 200, 35),
    _corner("Becketts", "R", 110, 80),
    _corner("Chapel", "L", 150, 55),
    _straight("Hangar Straight", 800),
    _corner("Stowe", "R", 110, 100),
    _straight("Stowe-Vale", 200),
    _corner("Vale", "L", 30, 100),
    _straight("Vale-Club", 30),
    _corner("Club", "R", 60, 140),
    _straight("Hamilton Straight (Club to line)", 280),
)

# Names the lap must pass in this order (corners only; straights are named between them).
CORNER_ORDER: tuple[str, ...] = (
    "Abbey", "Farm", "Village", "The Loop", "Aintree", "Wellington Straight", "Brooklands", "Luffield",
    "Woodcote", "Copse", "Maggotts", "Becketts", "Chapel", "Hangar Straight", "Stowe", "Vale", "Club",
)


_PINNED = ("Wellington Straight", "Hangar Straight")


@dataclass(frozen=True)
class Corner:
    """A segment placed on the lap: distances from the line, ``radius_m`` is inf for straights."""

    name: str
    start_m: float
    end_m: float
    direction: str
    radius_m: float


@dataclass(frozen=True)
class PitLane:
    """Pit lane as lap distances: entry (before the line) and exit (after it) plus the speed limit."""

    entry_m: float
    exit_m: float
    speed_limit_kph: float = 80.0

    @property
    def speed_limit_ms(self) -> float:
        return self.speed_limit_kph / 3.6


@dataclass(frozen=True, eq=False)
class Track:
    """A closed centreline on a 1 m distance grid ``s`` (0 .. length, length excluded).

    ``sectors_m`` = (end of sector 1, end of sector 2), ~1,900 m and ~3,950 m: sector 1 (Abbey, Farm,
    Village, The Loop, Aintree) ends on the Wellington Straight; sector 2 (Brooklands, Luffield, Woodcote,
    Copse) ends on the short straight between Copse and Maggotts; sector 3 is Maggotts/Becketts/Chapel,
    the Hangar Straight, Stowe, Vale, Club and the Hamilton Straight to the line.
    ``eq=False``: identity hashing, so a Track can key caches of speed profiles.
    """

    length_m: float
    s: np.ndarray
    x_m: np.ndarray
    y_m: np.ndarray
    heading_rad: np.ndarray
    curvature: np.ndarray
    sectors_m: tuple[float, float]
    corners: tuple[Corner, ...]
    pit_straight_m: tuple[float, float]
    pit_lane: PitLane

    def _wrap(self, distance_m: np.ndarray | float) -> np.ndarray:
        return np.mod(np.asarray(distance_m, dtype=float), self.length_m)

    def sector_of(self, distance_m: np.ndarray | float) -> np.ndarray:
        """Sector 1..3 (int8) of each distance; a boundary distance belongs to the sector it starts."""
        d = self._wrap(distance_m)
        return (np.searchsorted(np.asarray(self.sectors_m), d, side="right") + 1).astype(np.int8)

    def segment_of(self, distance_m: np.ndarray | float) -> np.ndarray:
        """Index into ``corners`` of each distance; a boundary distance belongs to the segment it starts."""
        starts = np.array([c.start_m for c in self.corners])
        return (np.searchsorted(starts, self._wrap(distance_m), side="right") - 1).astype(np.int64)

    def xy(self, distance_m: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Centreline position at each distance (linear interpolation, distances wrap modulo the length)."""
        d = self._wrap(distance_m)
        s_closed = np.append(self.s, self.length_m)
        return (np.interp(d, s_closed, np.append(self.x_m, self.x_m[0])),
                np.interp(d, s_closed, np.append(self.y_m, self.y_m[0])))

    def in_pit_lane(self, distance_m: np.ndarray | float) -> np.ndarray:
        """True where the lap distance is between pit entry and pit exit (across the line)."""
        d = self._wrap(distance_m)
        return (d >= self.pit_lane.entry_m) | (d < self.pit_lane.exit_m)


def _integrate(kappa: np.ndarray, ds: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heading and position at grid points from curvature at grid points (midpoint rule, heading 0 at s=0)."""
    heading = np.concatenate([[0.0], np.cumsum(kappa * ds)])  # n+1 values: the last is at s = length
    mid = 0.5 * (heading[:-1] + heading[1:])
    x = np.concatenate([[0.0], np.cumsum(np.cos(mid) * ds)])
    y = np.concatenate([[0.0], np.cumsum(np.sin(mid) * ds)])
    return heading, x, y


def _balanced_segments(segments: tuple[Segment, ...], length_m: float) -> tuple[Segment, ...]:
    """Adjust straight lengths (least weighted norm) so the table's polyline closes and sums to ``length_m``."""
    heading = 0.0
    pos = np.zeros(2)
    dirs: list[np.ndarray] = []
    for seg in segments:
        if seg.radius_m is None:
            u = np.array([math.cos(heading), math.sin(heading)])
            dirs.append(u)
            pos += u * seg.length_m
        else:  # exact arc
            h1 = heading + seg.angle_rad
            k = seg.angle_rad / seg.length_m
            pos += np.array([math.sin(h1) - math.sin(heading), math.cos(heading) - math.cos(h1)]) / k
            heading = h1
    straights = [i for i, seg in enumerate(segments) if seg.radius_m is None]
    # The two long straights are the layout's signature lengths: they move 20x less than the others.
    w = np.array([segments[i].length_m * (0.05 if segments[i].name in _PINNED else 1.0) for i in straights])
    a = np.vstack([np.array(dirs).T, np.ones(len(straights))])  # 3 x n
    b = np.array([-pos[0], -pos[1], length_m - sum(seg.length_m for seg in segments)])
    delta = w * (a.T @ np.linalg.solve((a * w) @ a.T, b))
    out = list(segments)
    for j, i in enumerate(straights):
        out[i] = Segment(segments[i].name, segments[i].length_m + float(delta[j]), None, "S")
    if min(seg.length_m for seg in out) <= 10.0:
        raise ValueError("layout table cannot be closed with positive straights; revise the corner angles")
    return tuple(out)


@functools.lru_cache(maxsize=1)
def segments() -> tuple[Segment, ...]:
    """The layout table actually used: nominal corners, straights balanced to close at 5891.0 m."""
    turning = sum(seg.angle_rad for seg in NOMINAL_SEGMENTS)
    if abs(turning + 2 * math.pi) > 1e-9:
        raise ValueError(f"corner angles sum to {math.degrees(turning):.3f} deg, need -360 (clockwise lap)")
    return _balanced_segments(NOMINAL_SEGMENTS, LENGTH_M)


def segment_table() -> pd.DataFrame:
    """The layout as a DataFrame: name, direction, radius (NaN on straights), length, start/end distance, angle."""
    segs = segments()
    lengths = np.array([seg.length_m for seg in segs])
    ends = np.cumsum(lengths)
    return pd.DataFrame({
        "name": [seg.name for seg in segs],
        "direction": [seg.direction for seg in segs],
        "radius_m": [np.nan if seg.radius_m is None else seg.radius_m for seg in segs],
        "length_m": lengths,
        "start_m": ends - lengths,
        "end_m": ends,
        "angle_deg": [math.degrees(seg.angle_rad) for seg in segs],
    })


@functools.lru_cache(maxsize=1)
def silverstone() -> Track:
    """The Silverstone GP track on a 1 m grid (cached: built once per process, ~ms)."""
    table = segment_table()
    n = round(LENGTH_M / GRID_STEP_M)
    s = np.arange(n) * GRID_STEP_M
    idx = np.searchsorted(table["end_m"].to_numpy(), s + 0.5 * GRID_STEP_M, side="right")
    sign = np.where(table["direction"].to_numpy() == "R", -1.0, 1.0)
    k_seg = np.where(table["radius_m"].isna(), 0.0, sign / table["radius_m"].fillna(1.0).to_numpy())
    kappa = k_seg[np.minimum(idx, len(table) - 1)]
    # Circular moving average: clothoid-like transitions; preserves the integral (total turning).
    win = np.ones(_SMOOTH_M) / _SMOOTH_M
    kappa = np.convolve(np.concatenate([kappa[-_SMOOTH_M:], kappa, kappa[:_SMOOTH_M]]), win, mode="same")
    kappa = kappa[_SMOOTH_M:-_SMOOTH_M]
    err = -2 * math.pi - kappa.sum() * GRID_STEP_M
    kappa = kappa + err * np.abs(kappa) / (np.abs(kappa).sum() * GRID_STEP_M)
    heading, x, y = _integrate(kappa, GRID_STEP_M)
    frac = np.arange(n + 1) / n
    x = x - (x[-1] - x[0]) * frac
    y = y - (y[-1] - y[0]) * frac

    corners = tuple(
        Corner(r.name, float(r.start_m), float(r.end_m), r.direction,
               math.inf if math.isnan(r.radius_m) else float(r.radius_m))
        for r in table.itertuples(index=False)
    )
    wellington = table.loc[table["name"] == "Wellington Straight"].iloc[0]
    copse_maggotts = table.loc[table["name"] == "Copse-Maggotts"].iloc[0]
    return Track(
        length_m=LENGTH_M,
        s=s,
        x_m=x[:-1],
        y_m=y[:-1],
        heading_rad=heading[:-1],
        curvature=kappa,
        # S1 ends 60 % down the Wellington Straight, S2 halfway from Copse to Maggotts (rounded to 10 m).
        sectors_m=(round(float(wellington.start_m + 0.6 * wellington.length_m), -1),
                   round(float(copse_maggotts.start_m + 0.5 * copse_maggotts.length_m), -1)),
        corners=corners,
        pit_straight_m=(float(table["start_m"].iloc[-1]), float(table["end_m"].iloc[0])),
        pit_lane=PitLane(entry_m=5650.0, exit_m=350.0),
    )
