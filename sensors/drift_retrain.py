"""`drift_retrain_sensor`: when a station's `drift` check fails, retrain that station on the new regime.

Reads the executions of the `forecast/drift_report` `drift` check since its cursor (the newest per
station wins) and applies `monitor.retrain_decision` to the failed ones: wait until enough post-onset
hours were observed, then request training set -> models -> evaluation -> champion for the station,
with the training window starting `pre_onset_days` before the onset and the reason and statistics
in the run's tags. All times are station (event) hours, so a simulation at 3600x behaves like the
real thing. The cool-down is kept per station in the cursor: one drift episode, one retrain, even
though the old champion keeps failing the check until the new one is released.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from aero_assets.forecast.assets import iso_utc
from aero_assets.forecast.monitor import RetrainPolicy, retrain_decision
from aero_assets.keys import DRIFT_CHECK, DRIFT_REPORT, FORECAST_TRAINING_CHAIN
from sensors.weather_observations import IN_FLIGHT, runs_for

HOUR = 3_600_000_000_000
TAG_LIMIT = 255  # Dagster run tag values are short strings


@dataclass
class DriftCursor:
    after_id: int = 0
    retrained_at: dict[str, int] = field(default_factory=dict)  # station -> station time of the last drift retrain
    onsets: dict[str, list[int]] = field(default_factory=dict)  # station -> onsets retrained for (newest 20)

    @classmethod
    def load(cls, raw: str | None) -> DriftCursor:
        try:
            obj = json.loads(raw or "{}")
            return cls(int(obj.get("after_id", 0)), {str(k): int(v) for k, v in obj.get("retrained_at", {}).items()},
                       {str(k): [int(o) for o in v][-20:] for k, v in obj.get("onsets", {}).items()})
        except (ValueError, TypeError, AttributeError, OverflowError):  # json.loads reads Infinity; int() of it
            return cls()  # overflows, and a cursor that raises fails every tick

    def dump(self) -> str:
        return json.dumps({"after_id": self.after_id, "retrained_at": self.retrained_at, "onsets": self.onsets})


PAGE = 500
MAX_RECORDS = 20_000  # a cursor reset reads back this far at most


def _check_records_after(instance, after_id: int) -> list:
    """Every `drift` check execution with an id above `after_id` (newest MAX_RECORDS), oldest first.

    Dagster pages the history newest first; one page is not enough when more stations were checked
    between two ticks than it holds (the oldest of them were never read).
    """
    key, records, cursor = dg.AssetCheckKey(DRIFT_REPORT, DRIFT_CHECK), [], None
    while len(records) < MAX_RECORDS:
        page = instance.event_log_storage.get_asset_check_execution_history(key, limit=PAGE, cursor=cursor)
        records.extend(r for r in page if r.id > after_id)
        if len(page) < PAGE or page[-1].id <= after_id:
            break
        cursor = page[-1].id
    return sorted(records, key=lambda r: r.id)


def _still_running(instance, rec) -> bool:
    run = instance.get_run_by_id(rec.run_id) if rec.run_id else None
    return run is not None and not run.is_finished


def latest_failed_checks(instance, after_id: int) -> tuple[int, dict[str, dict]]:
    """(the id to resume after, {station: summary of its newest evaluation}) for evaluations after `after_id`.

    A station whose newest evaluation passed maps to {"drifted": False}. An execution's id is given when the
    check is planned, so a check still running in one run can have a smaller id than one another run has
    finished: the returned id stays below the oldest check still running, so its verdict is read once it
    has one (the evaluations after it are read again meanwhile, which the cool-down and the retrained
    onsets make harmless). A planned check whose run has ended never gets a verdict and holds nothing.
    """
    newest, hold, out = after_id, None, {}
    for rec in _check_records_after(instance, after_id):
        if rec.status not in (AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED):
            planned = rec.status == AssetCheckExecutionRecordStatus.PLANNED
            if planned and hold is None and _still_running(instance, rec):
                hold = rec.id - 1
            continue  # planned or running: not a verdict yet (seen again once it has one)
        newest = max(newest, rec.id)
        evaluation = rec.event.dagster_event.event_specific_data if rec.event and rec.event.dagster_event else None
        summary_value = evaluation.metadata.get("summary") if evaluation is not None else None
        summary = dict(summary_value.value) if summary_value is not None else {}
        # the station: the record's partition where the storage keeps it (SQLite storage leaves it empty), else
        # the one the report names
        station = rec.partition or summary.get("station")
        if not station or not isinstance(summary.get("last_ts"), int):  # retrain_decision's clock; without it
            continue  # (an older or hand-made report) int() would fail the tick
        summary["drifted"] = rec.status == AssetCheckExecutionRecordStatus.FAILED and bool(summary.get("drifted"))
        out[str(station)] = summary
    return (newest if hold is None else min(newest, hold)), out


def build_drift_retrain_sensor(policy: RetrainPolicy, minimum_interval_seconds: int = 10) -> dg.SensorDefinition:
    @dg.sensor(
        name="drift_retrain_sensor", asset_selection=FORECAST_TRAINING_CHAIN,
        minimum_interval_seconds=minimum_interval_seconds, default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Retrains a station whose `drift` check failed, once {policy.min_post_onset_h:g} post-onset hours "
                    f"were observed, on a window from {policy.pre_onset_days:g} days before the onset; a cool-down "
                    f"of {policy.cooldown_h:g} station hours makes one drift episode one retrain.")
    def drift_retrain_sensor(context: dg.SensorEvaluationContext):
        cursor = DriftCursor.load(context.cursor)
        newest, verdicts = latest_failed_checks(context.instance, cursor.after_id)
        if newest == cursor.after_id and not verdicts:
            return dg.SkipReason("No new drift check results.")
        cursor.after_id = newest
        requests, notes = [], []
        for station, summary in sorted(verdicts.items()):
            decision = retrain_decision(summary, cursor.retrained_at.get(station), policy,
                                        cursor.onsets.get(station, []))
            if decision.action != "retrain":
                if decision.action not in ("none", "done"):
                    notes.append(f"{station}: {decision.action} ({decision.reason})")
                continue
            if runs_for(context.instance, station, "training", IN_FLIGHT):
                notes.append(f"{station}: drifted, but a training run is already in flight")
                continue
            cursor.retrained_at[station] = int(summary["last_ts"])
            onset = summary.get("onset_ts")
            cursor.onsets[station] = [*cursor.onsets.get(station, []), int(onset or summary["last_ts"])][-20:]
            post_h = (int(summary["last_ts"]) - int(onset or summary["last_ts"])) / HOUR
            tags = {"aero/trigger": "drift", "aero/station": station, "aero/chain": "training",
                    "aero/drift_reason": decision.reason[:TAG_LIMIT], "aero/drift_onset": iso_utc(onset),
                    "aero/drift_alarm": iso_utc(summary.get("alarm_ts")), "aero/psi": str(summary.get("psi")),
                    "aero/ks": str(summary.get("ks")), "aero/train_from": iso_utc(decision.train_start_ts),
                    "aero/post_onset_hours": f"{post_h:.0f}"}
            requests.append(dg.RunRequest(
                run_key=f"drift-retrain/{station}/{onset}", partition_key=station,
                asset_selection=FORECAST_TRAINING_CHAIN,
                run_config={"ops": {"forecast__training_set": {"config": {"start": iso_utc(decision.train_start_ts)}},
                                    "forecast__gru_model": {"config": {"fine_tune": True}}}},
                tags=tags))
            context.log.info(f"{station}: drift retrain from {iso_utc(decision.train_start_ts)} ({decision.reason})")
        return dg.SensorResult(run_requests=requests, cursor=cursor.dump(),
                               skip_reason=None if requests else ("; ".join(notes) or "No drift."))

    return drift_retrain_sensor


def build_routine_retrain_schedule(cron: str = "0 4 * * 1") -> dg.ScheduleDefinition:
    """The seed's routine retrain check, weekly: every known station's training chain, newest history."""
    from aero_assets.keys import forecast_stations

    @dg.schedule(name="routine_retrain", cron_schedule=cron, target=FORECAST_TRAINING_CHAIN,
                 default_status=dg.DefaultScheduleStatus.RUNNING, execution_timezone="UTC",
                 description="Weekly retrain of every station on its newest history (slow degradation, which the "
                             "drift verdict leaves alone); a candidate is released only through the champion gate.")
    def routine_retrain(context: dg.ScheduleEvaluationContext):
        stations = context.instance.get_dynamic_partitions(forecast_stations.name)
        if not stations:
            return dg.SkipReason("No forecast stations yet.")
        when = context.scheduled_execution_time.strftime("%Y-%m-%d")
        # a station already training (a drift retrain, say) is left out: two chains of one station at once share
        # its training set and evaluation files and race on released.json; the running one trains on new history
        busy = {s for s in stations if runs_for(context.instance, s, "training", IN_FLIGHT)}
        if busy:
            context.log.info(f"routine retrain leaves out {len(busy)} station(s) already training: "
                             f"{', '.join(sorted(busy)[:20])}")
        requests = [dg.RunRequest(run_key=f"routine/{when}/{s}", partition_key=s,
                                  tags={"aero/trigger": "routine", "aero/station": s, "aero/chain": "training"})
                    for s in sorted(set(stations) - busy)]
        return requests or dg.SkipReason(f"Every station is already training ({', '.join(sorted(busy)[:20])}).")

    return routine_retrain
