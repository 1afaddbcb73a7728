"""`aero serve` as a real process over a lake built by the real pipeline (the production topology of
tests/topology.py: every domain landed by its sensors), read over HTTP as a client would."""

import json
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pyarrow.parquet as pq
import pytest

from resources.embedded_broker import free_port, port_is_open, stop_process_group
from tests.topology import BIN, REPO

pytestmark = [pytest.mark.broker, pytest.mark.daemon]
TOKEN = "test-token-7f3a"


def _start(env: dict, token: str | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in env.items() if k != "AERO_API_TOKEN"}
    if token:
        env["AERO_API_TOKEN"] = token
    proc = subprocess.Popen([str(BIN / "aero"), "serve", "--port", str(port)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while not port_is_open("127.0.0.1", port):
        assert proc.poll() is None and time.monotonic() < deadline, "aero serve did not start"
        time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def api(production):
    proc, url = _start(production.env, None)
    yield url
    stop_process_group(proc)


@pytest.fixture(scope="module")
def locked_api(production):
    proc, url = _start(production.env, TOKEN)
    yield url
    stop_process_group(proc)


def get(url: str, path: str, token: str | None = None, data: bytes | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url + path, data=data, headers={
        **({"Authorization": f"Bearer {token}"} if token else {}),
        **({"Content-Type": "application/json"} if data is not None else {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def get_json(url: str, path: str, **kw):
    status, body, _ = get(url, path, **kw)
    assert status == 200, (path, status, body[:500])
    return json.loads(body)


def test_the_docs_list_every_endpoint(api):
    spec = get_json(api, "/openapi.json")
    paths = set(spec["paths"])
    assert {"/healthz", "/metrics", "/windtunnel/runs", "/windtunnel/runs/{run_id}", "/windtunnel/runs/{run_id}/series",
            "/windtunnel/runs/{run_id}/comparison", "/windtunnel/runs/{run_id}/export", "/tires/alerts",
            "/tires/windows", "/tires/alerts/live", "/tires/fleet", "/f1/sessions", "/f1/sessions/{session_id}/laps",
            "/f1/sessions/{session_id}/laps/{lap}/trace", "/rig/kpis", "/rig/anomalies", "/forecast/predict",
            "/forecast/{station}/evaluation", "/forecast/{station}/predictions"} <= paths
    status, body, _ = get(api, "/docs")
    assert status == 200 and b"swagger" in body.lower()


def test_health_reports_broker_storage_and_lake(api):
    health = get_json(api, "/healthz")
    assert health["status"] == "ok"
    assert {k: v["status"] for k, v in health["checks"].items()} == {
        "lake": "ok", "broker": "ok", "instance_storage": "ok"}


def test_wind_tunnel_runs_qc_series_comparison_and_the_released_export(api, production):
    runs = {r["run_id"]: r for r in get_json(api, "/windtunnel/runs")["items"]}
    good, bad = runs[production.good_run], runs[production.failed_run]
    assert good["qc_status"] in ("pass", "warn") and good["released"] and good["processed"]
    assert bad["qc_status"] == "fail" and not bad["released"] and bad["channels_failed"] > 0
    assert [r["run_id"] for r in get_json(api, "/windtunnel/runs?status=fail")["items"]] == [production.failed_run]
    detail = get_json(api, f"/windtunnel/runs/{production.good_run}")
    assert len(detail["qc"]) == 72 and any(m["name"] == "CL" for m in detail["metrics"])

    channels = ["FLOW_V", "FB_FZ", "PT_01", "PT_02"]
    series = get_json(api, f"/windtunnel/runs/{production.good_run}/series?channels={','.join(channels)}"
                           "&max_points=200")["series"]
    raw = pq.read_table(production.home / "lake" / "windtunnel" / "raw_run" / f"run_id={production.good_run}"
                        / "data.parquet").to_pandas()
    for c in channels:
        s = series[c]
        assert 0 < s["points"] <= 200 and s["of"] == int((raw["channel"] == c).sum())
        values = raw.loc[raw["channel"] == c, "value"]
        assert min(s["v"]) == values.min() and max(s["v"]) == values.max(), "min/max downsampling keeps extremes"
        assert s["t"] == sorted(s["t"])
    window = get_json(api, f"/windtunnel/runs/{production.good_run}/series?channels=FLOW_V&from=0.2&to=0.4")
    assert all(0.2 <= t <= 0.4 for t in window["series"]["FLOW_V"]["t"])

    comparison = get_json(api, f"/windtunnel/runs/{production.good_run}/comparison")["metrics"]
    assert {m["metric"] for m in comparison} >= {"CL", "CD"}
    status, body, headers = get(api, f"/windtunnel/runs/{production.good_run}/export")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert body == (production.home / "exports" / production.good_run / "processed.csv").read_bytes()
    status, body, _ = get(api, f"/windtunnel/runs/{production.failed_run}/export")
    assert status == 404 and b"failed QC" in body


def test_tires_f1_rig_and_forecast_endpoints_serve_what_the_assets_wrote(api, production):
    alerts = get_json(api, "/tires/alerts?limit=1000")
    assert alerts["total"] >= 1 and len({a["alert_id"] for a in alerts["items"]}) == alerts["total"]
    vehicle = alerts["items"][0]["vehicle_id"]
    mine = get_json(api, f"/tires/alerts?vehicle={vehicle}&limit=1000")["items"]
    assert mine and all(a["vehicle_id"] == vehicle for a in mine)
    assert all(not a["closed"] for a in get_json(api, "/tires/alerts?open=true&limit=1000")["items"])
    windows = get_json(api, "/tires/windows?limit=5")
    assert windows["total"] >= 1 and len(windows["items"]) <= 5
    page2 = get_json(api, "/tires/windows?limit=5&offset=5")
    assert page2["offset"] == 5 and (not page2["items"] or page2["items"][0] != windows["items"][0])
    first = windows["items"][0]["window_start"]
    later = get_json(api, "/tires/windows?limit=1000&from=" + urllib.parse.quote(first))["items"]
    assert all(w["window_start"] >= first for w in later)

    fleet = get_json(api, "/tires/fleet")
    assert fleet["total"] >= 1 and {"minute", "active_vehicles", "open_low_pressure"} <= set(fleet["items"][0])
    assert fleet["items"][0]["active_vehicles"] >= 1

    sessions = {s["session_id"]: s for s in get_json(api, "/f1/sessions")["items"]}
    assert sessions[production.f1_session]["laps"] >= 1
    laps = get_json(api, f"/f1/sessions/{production.f1_session}/laps")["laps"]
    assert len(laps) == sessions[production.f1_session]["laps"] and "lap_time_s" in laps[0]

    kpis = get_json(api, f"/rig/kpis?from={production.rig_day}&to={production.rig_day}")
    assert [(k["rig_id"], k["readings"]) for k in kpis["items"]] == [("rig-42", 30)]
    assert get_json(api, "/rig/kpis?from=2030-01-01")["total"] == 0
    status, body, _ = get(api, "/rig/kpis?format=csv")
    assert status == 200 and body.splitlines()[0].startswith(b'"day","rig_id"') and b"rig-42" in body
    assert get_json(api, "/rig/anomalies")["total"] >= 0

    evaluation = get_json(api, f"/forecast/{production.weather_station}/evaluation")
    assert evaluation["station"] == production.weather_station and evaluation["table"]
    stations = get_json(api, "/forecast/stations")["items"]
    assert production.weather_station in [s["station"] for s in stations]


def test_predict_answers_from_the_champion_in_service(api, production):
    body = json.dumps({"station": production.weather_station}).encode()
    status, raw, _ = get(api, "/forecast/predict", data=body)
    stations = {s["station"]: s for s in get_json(api, "/forecast/stations")["items"]}
    champion = stations[production.weather_station]["champion"]
    if champion is None:  # the gate kept every candidate out: the API says so instead of guessing
        assert status == 404 and b"no champion in service" in raw
        return
    assert status == 200, raw
    out = json.loads(raw)
    assert out["model"] == champion["kind"] and out["version"] == champion["version"]
    assert out["forecasts"] and all(-90 < f["forecast_c"] < 60 for f in out["forecasts"])


def test_metrics_are_prometheus_text_with_every_domain(api, production):
    from prometheus_client.parser import text_string_to_metric_families

    get(api, "/windtunnel/runs")
    status, body, headers = get(api, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    value = {(f.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert value[("aero_broker_up", ())] == 1.0
    assert value[("aero_windtunnel_runs", (("qc_status", "fail"),))] >= 1
    assert value[("aero_windtunnel_runs", (("qc_status", "pass"),))] + \
        value[("aero_windtunnel_runs", (("qc_status", "warn"),))] >= 1
    assert value[("aero_f1_laps_summarised", ())] >= 1
    assert ("aero_tires_open_alerts", ()) in value and ("aero_rig_anomalies", ()) in value
    lag_topics = {dict(labels)["topic"] for (name, labels) in value if name == "aero_landing_lag_messages"}
    assert {"windtunnel.samples", "tires.raw", "f1.telemetry", "weather.observations"} <= lag_topics
    counted = (("route", "/windtunnel/runs"), ("status", "200"))
    assert ("aero_api_requests_total", counted) in value or ("aero_api_requests", counted) in value
    assert b"aero_api_requests_total{" in body, "the counter's exposition name"


def test_live_alerts_arrive_as_server_sent_events(api, production):
    from resources.kafka import KafkaResource
    from resources.settings import load_settings

    settings = load_settings(production.env)
    received: list[str] = []

    def listen():
        req = urllib.request.Request(api + "/tires/alerts/live?seconds=20")
        with urllib.request.urlopen(req, timeout=30) as resp:
            for line in resp:  # (the fleet's own alerts may come first: read on until ours)
                received.append(line.decode())
                if line.startswith(b"data:") and b"sse-test" in line:
                    return

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    deadline = time.monotonic() + 15
    while not received and time.monotonic() < deadline:  # ": connected" once the consumer is subscribed
        time.sleep(0.1)
    time.sleep(3)  # (the group's partitions are assigned after the subscribe)
    producer = KafkaResource.from_settings(settings.kafka).producer()
    alert = {"alert_id": "sse-test", "vehicle_id": "fleet-v999", "tire": "FL", "alert_type": "low_pressure"}
    for _ in range(5):
        producer.produce(settings.topics.tires_alerts, json.dumps(alert).encode())
        producer.flush(5)
        reader.join(timeout=2)
        if not reader.is_alive():
            break
    assert any(line.startswith("data:") and "sse-test" in line for line in received), received


# -- security ---------------------------------------------------------------------------------------------------

HOSTILE = ["..%2F..%2Fetc%2Fpasswd", "%2e%2e", "a%00b", "x'%20OR%201=1--", "%3Bdrop%20table%20runs", "r" * 300,
           "%E2%80%AEevil", ".hidden", "-rf"]


def test_hostile_ids_and_filters_get_4xx_and_leak_nothing(api):
    paths = [f"/windtunnel/runs/{h}" for h in HOSTILE] + [f"/windtunnel/runs/{h}/series" for h in HOSTILE] + \
        [f"/windtunnel/runs/{h}/export" for h in HOSTILE] + [f"/f1/sessions/{h}/laps" for h in HOSTILE] + \
        [f"/forecast/{h}/evaluation" for h in HOSTILE] + \
        [f"/tires/alerts?vehicle={h}" for h in HOSTILE] + [f"/rig/kpis?rig={h}" for h in HOSTILE] + \
        ["/rig/kpis?from=2026-01-01';--", "/tires/alerts?from=yesterday", "/windtunnel/runs?limit=100000",
         "/windtunnel/runs?offset=-1", "/windtunnel/runs/x/series?max_points=1", "/rig/kpis?format=xml",
         "/windtunnel/runs/x/series?channels=" + ",".join(["A"] * 100)]
    for path in paths:
        status, body, _ = get(api, path)
        assert 400 <= status < 500, (path, status, body[:200])
        text = body.decode(errors="replace")
        assert "Traceback" not in text and "/tmp/" not in text and str(REPO) not in text, (path, text[:300])
    status, body, _ = get(api, "/forecast/predict", data=json.dumps({"station": "../../etc"}).encode())
    assert status == 400 and b"contains '..'" in body


def test_with_a_token_everything_but_health_wants_it(locked_api):
    assert get(locked_api, "/healthz")[0] == 200
    for path in ("/windtunnel/runs", "/metrics", "/rig/kpis", "/tires/alerts"):
        status, _, headers = get(locked_api, path)
        assert status == 401 and headers.get("www-authenticate") == "Bearer", path
        assert get(locked_api, path, token="wrong")[0] == 401
        assert get(locked_api, path, token=TOKEN)[0] == 200, path


def test_the_api_binds_to_loopback_by_default():
    from aero_assets.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.port == 8000


def test_the_explorer_overlays_two_channels_of_a_run_in_a_real_browser(api, production, browser):
    """Debian's headless Chromium opens the explorer, picks the good run, overlays two channels (and its
    baseline), and the chart is drawn: a uPlot canvas with ink on it, fed only by files the API serves."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from tests.conftest import ARTIFACTS, wait_for

    browser.get(api + "/")
    runs = wait_for(lambda: Select(browser.find_element(By.ID, "wt-runs")).options or None, timeout=30,
                      interval=0.3, what="the explorer to list the landed runs")
    assert production.good_run in [o.get_attribute("value") for o in runs]
    pick = Select(browser.find_element(By.ID, "wt-runs"))
    pick.deselect_all()
    pick.select_by_value(production.good_run)
    channels = Select(browser.find_element(By.ID, "wt-channels"))
    channels.deselect_all()
    for c in ("FLOW_V", "FB_FZ"):
        channels.select_by_value(c)
    browser.find_element(By.ID, "wt-baseline").click()
    browser.find_element(By.ID, "wt-plot").click()
    box = wait_for(lambda: (b := browser.find_element(By.ID, "wt-chart")).get_attribute("data-series") and b,
                     timeout=30, interval=0.3, what="the chart to be drawn")
    assert int(box.get_attribute("data-series")) >= 2 and int(box.get_attribute("data-points")) > 100
    ink = browser.execute_script("""
        const c = document.querySelector('#wt-chart canvas'); if (!c) return 0;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
        return n;""")
    assert ink > 2000, "lines were drawn on the canvas"
    legend = browser.find_element(By.ID, "wt-chart").text
    assert f"{production.good_run} FLOW_V" in legend and f"{production.good_run} FB_FZ" in legend
    assert browser.find_element(By.ID, "status").text == "ok"
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(r => r.name)")
    assert all(r.startswith(api) for r in resources), "nothing is loaded from the internet"
    browser.save_screenshot(str(ARTIFACTS / "explorer_overlay.png"))


def test_a_lap_trace_and_the_explorer_compares_two_laps(api, production, browser):
    from selenium.webdriver.common.by import By

    from tests.conftest import ARTIFACTS, wait_for

    laps = get_json(api, f"/f1/sessions/{production.f1_session}/laps")["laps"]
    trace = get_json(api, f"/f1/sessions/{production.f1_session}/laps/{laps[-1]['lap']}/trace?max_points=500")
    assert 0 < trace["points"] <= 500 and trace["distance_m"] == sorted(trace["distance_m"])
    assert max(trace["speed_kph"]) > 250 and trace["t_s"][-1] > 60, "a flying lap at Silverstone"
    assert get(api, f"/f1/sessions/{production.f1_session}/laps/999/trace")[0] == 404
    assert get(api, "/f1/sessions/..%2Fx/laps/1/trace")[0] in (400, 404)

    browser.get(api + "/explorer")
    browser.find_element(By.CSS_SELECTOR, "nav button[data-tab='f1']").click()
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#f1-lap-b option")) >= 2 or None, timeout=30,
               interval=0.3, what="the session's laps in the explorer")
    browser.find_element(By.ID, "f1-compare").click()
    wait_for(lambda: browser.find_element(By.ID, "f1-trace").get_attribute("data-series") or None, timeout=30,
               interval=0.3, what="the speed trace and delta time to be drawn")
    assert "delta time" in browser.find_element(By.ID, "f1-trace").text
    browser.save_screenshot(str(ARTIFACTS / "explorer_f1_laps.png"))


def test_a_newly_released_champion_is_used_without_a_restart(api, production):
    """The gate writes released.json; the API reads it per request, so the next predict answers from the new
    version. (A copy of the champion's files under a new version stands for a retrain the gate released.)"""
    import shutil

    station = production.weather_station
    released = production.home / "lake" / "forecast" / "champion_model" / f"station={station}" / "released.json"
    if not released.exists():
        pytest.skip("the gate released no champion for the topology's station in this run")
    state = json.loads(released.read_text())
    current = state["current"]
    before = get(api, "/forecast/predict", data=json.dumps({"station": station}).encode())
    assert before[0] == 200 and json.loads(before[1])["version"] == current["version"]
    models = production.home / "models" / f"{current['kind']}-{station}"
    new_version = current["version"] + "-r2"
    shutil.copytree(models / current["version"], models / new_version)
    original = released.read_text()
    try:
        state["current"] = {**current, "version": new_version}
        tmp = released.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(released)
        after = get(api, "/forecast/predict", data=json.dumps({"station": station}).encode())
        assert after[0] == 200, after[1][:300]
        assert json.loads(after[1])["version"] == new_version
        assert json.loads(after[1])["forecasts"] == json.loads(before[1])["forecasts"], "the same weights"
    finally:
        released.write_text(original)
        shutil.rmtree(models / new_version)
