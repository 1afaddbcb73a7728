"""Public asset keys and partition definitions (DESIGN.md asset catalog): defined once, used everywhere."""

import dagster as dg

WINDTUNNEL = "windtunnel"

windtunnel_runs = dg.DynamicPartitionsDefinition(name="windtunnel_runs")

RAW_RUN = dg.AssetKey([WINDTUNNEL, "raw_run"])
QC_REPORT = dg.AssetKey([WINDTUNNEL, "qc_report"])
PROCESSED_RUN = dg.AssetKey([WINDTUNNEL, "processed_run"])
AERO_METRICS = dg.AssetKey([WINDTUNNEL, "aero_metrics"])
RUN_COMPARISON = dg.AssetKey([WINDTUNNEL, "run_comparison"])
RUN_EXPORT = dg.AssetKey([WINDTUNNEL, "run_export"])
# what a finished run triggers, in one run: landing, QC (blocking), processing, metrics, comparison, release
WINDTUNNEL_RUN_CHAIN = [RAW_RUN, QC_REPORT, PROCESSED_RUN, AERO_METRICS, RUN_COMPARISON, RUN_EXPORT]
SAMPLES_TOPIC_ASSET = dg.AssetKey(["kafka", "windtunnel_samples"])
RUNS_TOPIC_ASSET = dg.AssetKey(["kafka", "windtunnel_runs"])

# One landing of a topic at a time (DESIGN.md): assets that land a topic declare this pool and
# dagster.yaml limits every pool to one slot.
WINDTUNNEL_LANDING_POOL = "landing_windtunnel"

TIRES = "tires"
# hourly on event time; end_offset=1 includes the open current hour, refreshed as data lands
tires_hourly = dg.HourlyPartitionsDefinition(start_date="2026-01-01-00:00", end_offset=1)
TIRE_READINGS = dg.AssetKey([TIRES, "readings"])
TIRE_WINDOWS = dg.AssetKey([TIRES, "window_aggregates"])
TIRE_ALERTS = dg.AssetKey([TIRES, "alerts"])
TIRE_FLEET_STATUS = dg.AssetKey([TIRES, "fleet_status"])
# what landed readings trigger per touched hour, in one run
TIRES_HOUR_CHAIN = [TIRE_WINDOWS, TIRE_ALERTS, TIRE_FLEET_STATUS]
TIRES_RAW_TOPIC_ASSET = dg.AssetKey(["kafka", "tires_raw"])
TIRES_ALERTS_TOPIC_ASSET = dg.AssetKey(["kafka", "tires_alerts"])
TIRES_LANDING_POOL = "landing_tires"

F1 = "f1"
# one partition per session, added by the sensor when a session appears on the lifecycle topic
f1_sessions = dg.DynamicPartitionsDefinition(name="f1_sessions")
F1_TELEMETRY = dg.AssetKey([F1, "telemetry"])
F1_LAP_SUMMARIES = dg.AssetKey([F1, "lap_summaries"])
F1_PUBLISHED_LAPS = dg.AssetKey([F1, "published_laps"])
# what landed laps trigger per session, in one run: summaries (checked), then the release to f1.analytics
F1_SESSION_CHAIN = [F1_LAP_SUMMARIES, F1_PUBLISHED_LAPS]
F1_TELEMETRY_TOPIC_ASSET = dg.AssetKey(["kafka", "f1_telemetry"])
F1_SESSIONS_TOPIC_ASSET = dg.AssetKey(["kafka", "f1_sessions"])
F1_ANALYTICS_TOPIC_ASSET = dg.AssetKey(["kafka", "f1_analytics"])
F1_LANDING_POOL = "landing_f1"
F1_PUBLISH_POOL = "publish_f1_analytics"

RIG = "rig"
# daily on event time; end_offset=1 includes today, refreshed as readings land
# from 2000: a rig's CSV of old readings is still data (parsing refuses times before 2000 or a day ahead)
rig_daily = dg.DailyPartitionsDefinition(start_date="2000-01-01", end_offset=1)
RIG_READINGS = dg.AssetKey([RIG, "readings"])
RIG_CLEAN = dg.AssetKey([RIG, "clean_readings"])
RIG_ANOMALIES = dg.AssetKey([RIG, "anomalies"])
RIG_KPIS = dg.AssetKey([RIG, "kpis"])
# what landed readings trigger per touched day, in one run
RIG_DAY_CHAIN = [RIG_CLEAN, RIG_ANOMALIES, RIG_KPIS]
RIG_TOPIC_ASSET = dg.AssetKey(["kafka", "rig_readings"])
RIG_INBOX_ASSET = dg.AssetKey(["inbox", "rig"])
RIG_LANDING_POOL = "landing_rig"

FORECAST = "forecast"
# one partition per station, added by the weather sensor when a station first lands
forecast_stations = dg.DynamicPartitionsDefinition(name="forecast_stations")
WEATHER_OBSERVATIONS = dg.AssetKey([FORECAST, "observations"])
TRAINING_SET = dg.AssetKey([FORECAST, "training_set"])
GRU_MODEL = dg.AssetKey([FORECAST, "gru_model"])
PROPHET_MODEL = dg.AssetKey([FORECAST, "prophet_model"])
MODEL_EVALUATION = dg.AssetKey([FORECAST, "model_evaluation"])
CHAMPION_MODEL = dg.AssetKey([FORECAST, "champion_model"])
PREDICTIONS = dg.AssetKey([FORECAST, "predictions"])
DRIFT_REPORT = dg.AssetKey([FORECAST, "drift_report"])
# a (re)train of one station, in one run: the set, both models, their evaluation, the gated release
FORECAST_TRAINING_CHAIN = [TRAINING_SET, GRU_MODEL, PROPHET_MODEL, MODEL_EVALUATION, CHAMPION_MODEL]
# what landed observations trigger per station once a champion is in service
FORECAST_MONITOR_CHAIN = [PREDICTIONS, DRIFT_REPORT]
WEATHER_TOPIC_ASSET = dg.AssetKey(["kafka", "weather_observations"])
WEATHER_LANDING_POOL = "landing_weather"
DRIFT_CHECK = "drift"
