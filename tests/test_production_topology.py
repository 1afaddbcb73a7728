"""The production topology with real processes (tests/topology.py): Postgres storage in its own database,
a gRPC code server, the daemon and the webserver as separate processes, the embedded broker, every
domain's simulator. Nobody clicks: sensors land, chains run, checks decide. The results are read back
the way a user or a tool would: through the webserver's GraphQL API, and in a real browser (Debian's
headless Chromium driven by Selenium; screenshots kept under .test-artifacts/)."""

import re
import time

import pytest

from tests.conftest import ARTIFACTS, wait_for
from tests.topology import REPO, Stack

pytestmark = [pytest.mark.broker, pytest.mark.daemon]
GROUPS = {"windtunnel", "tires", "f1", "rig", "forecast"}
SCROLL_EVERY_PANE = ("document.querySelectorAll('*').forEach(e => { if (e.scrollHeight > e.clientHeight + 50 "
                     "&& getComputedStyle(e).overflowY !== 'visible') e.scrollTop += 400; })")

ASSET_STATE = """
query ($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    groupName
    assetMaterializations(limit: 20) { partition runId }
    assetChecksOrError {
      ... on AssetChecks {
        checks { name blocking executionForLatestMaterialization { status evaluation { description } } }
      }
    }
  }
}"""
RUNS = """{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"""


def _state(stack: Stack, *keys: str) -> dict[str, dict]:
    nodes = stack.graphql(ASSET_STATE, {"keys": [{"path": k.split("/")} for k in keys]})["assetNodes"]
    return {"/".join(n["assetKey"]["path"]): n for n in nodes}


def _partitions(node: dict) -> set:
    return {m["partition"] for m in node["assetMaterializations"]}


def _checks(node: dict) -> dict[str, dict]:
    return {c["name"]: c for c in node["assetChecksOrError"]["checks"]}


@pytest.fixture(scope="module")
def stack(production):
    return production


def test_every_domain_lands_and_checks_itself_and_graphql_reads_it_back(stack):
    state = _state(stack, "windtunnel/qc_report", "windtunnel/run_export", "windtunnel/raw_run", "tires/fleet_status",
                   "tires/window_aggregates", "f1/lap_summaries", "f1/published_laps", "rig/clean_readings",
                   "rig/kpis", "forecast/observations", "forecast/model_evaluation")
    assert {n["groupName"] for n in state.values()} == GROUPS
    # wind tunnel: the good run released, the faulty one stopped by its blocking QC check, with the reason
    assert stack.good_run in _partitions(state["windtunnel/run_export"])
    assert stack.failed_run not in _partitions(state["windtunnel/run_export"])
    assert {stack.good_run, stack.failed_run} <= _partitions(state["windtunnel/raw_run"])
    blocking = _checks(state["windtunnel/qc_report"])["qc_run_not_failed"]
    assert blocking["blocking"] is True
    runs = stack.graphql(RUNS)["runsOrError"]["results"]
    tags = {r["runId"]: {t["key"]: t["value"] for t in r["tags"]} for r in runs}
    failed = [r for r in runs if tags[r["runId"]].get("dagster/partition") == stack.failed_run]
    assert failed and all(r["status"] == "FAILURE" for r in failed), "a failed blocking check fails its run"
    # tires, F1, rig, forecast: materialized by their sensors, their checks evaluated
    assert _partitions(state["tires/fleet_status"]) and _partitions(state["tires/window_aggregates"])
    assert stack.f1_session in _partitions(state["f1/published_laps"])
    assert _checks(state["f1/lap_summaries"])
    assert stack.rig_day in _partitions(state["rig/kpis"])
    balance = _checks(state["rig/clean_readings"])["clean_plus_quarantined_equals_input"]
    assert balance["executionForLatestMaterialization"]["status"] == "SUCCEEDED"
    assert stack.weather_station in _partitions(state["forecast/model_evaluation"])
    assert _partitions(state["forecast/observations"]) == {None}  # the landing is unpartitioned
    # every run was started by a sensor (nobody clicked) and stored in this test's Postgres database
    assert all("dagster/sensor_name" in tags[r["runId"]] or "dagster/parent_run_id" in tags[r["runId"]]
               for r in runs), [tags[r["runId"]] for r in runs]
    assert "aero_topology_" in stack.env["AERO_DAGSTER_PG_URL"]


# -- the UI, in a real browser --------------------------------------------------------------------------------

def _page(driver, url: str, ready, what: str, timeout: float = 60.0):
    driver.get(url)
    return wait_for(lambda: ready(driver), timeout=timeout, interval=0.5, what=what)


def _text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def test_the_catalog_shows_the_five_asset_groups_first(stack, browser):
    from selenium.webdriver.common.by import By

    _page(browser, f"{stack.webserver}/assets", lambda d: "qc_report" in _text(d) or "lap_summaries" in _text(d),
          "the catalog to render")
    assert "Join the Dagster community" not in _text(browser), "the first-visit modal must not cover the catalog"
    browser.save_screenshot(str(ARTIFACTS / "catalog.png"))
    groups: set[str] = set()
    for _ in range(40):  # the table renders the rows in view: scroll through it, collecting the group links
        for a in browser.find_elements(By.CSS_SELECTOR, "a[href*='asset-groups']"):
            groups |= set(re.findall(r"group%3A%22([\w-]+)%22", a.get_attribute("href") or ""))
        if groups >= GROUPS:
            break
        browser.execute_script(SCROLL_EVERY_PANE)
        time.sleep(0.3)
    assert groups >= GROUPS, groups


def test_a_qc_report_materialization_shows_its_plot(stack, browser):
    from selenium.webdriver.common.by import By

    url = f"{stack.webserver}/assets/windtunnel/qc_report?view=events&partition={stack.good_run}"
    _page(browser, url, lambda d: f"Partition {stack.good_run} materialized" in _text(d),
          "the materialization of the good run's QC report")
    link = wait_for(lambda: browser.find_elements(By.XPATH, "//*[text()='[Show Markdown]']"), timeout=30,
                      interval=0.5, what="the plot's metadata entry")
    link[0].click()
    plots = wait_for(lambda: [i for i in browser.find_elements(By.CSS_SELECTOR, "img[src^='data:image/png']")
                                if i.is_displayed() and browser.execute_script("return arguments[0].naturalWidth", i)],
                       timeout=30, interval=0.5, what="the QC plot to render")
    width = browser.execute_script("return arguments[0].naturalWidth", plots[0])
    assert width > 200, "a real decoded image, not a broken one"
    browser.save_screenshot(str(ARTIFACTS / "qc_report_plot.png"))


def test_a_failed_blocking_check_shows_its_reason(stack, browser):
    url = f"{stack.webserver}/assets/windtunnel/qc_report?view=checks&checkDetail=qc_run_not_failed"
    text = _page(browser, url, lambda d: "blocking asset check" in _text(d) and "Failed" in _text(d) and _text(d),
                 "the blocking check's page")
    assert "critical channels failed" in text or "channels failed" in text, text[:2000]
    browser.save_screenshot(str(ARTIFACTS / "failed_blocking_check.png"))


def test_aero_backfill_reprocesses_a_date_range_through_the_daemon(stack):
    import subprocess

    from tests.topology import BIN

    out = subprocess.run([str(BIN / "aero"), "backfill", "rig", "--from", stack.rig_day, "--to", stack.rig_day,
                          "--wait", "240"], env=stack.env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    backfill_id = re.search(r"backfill (\w+) ", out.stdout).group(1)
    assert f"{backfill_id} COMPLETED_SUCCESS" in out.stdout
    runs = stack.graphql(RUNS)["runsOrError"]["results"]
    done = [r for r in runs if any(t["key"] == "dagster/backfill" and t["value"] == backfill_id for t in r["tags"])]
    assert [r["status"] for r in done] == ["SUCCESS"], done
    kpis = _state(stack, "rig/kpis")["rig/kpis"]["assetMaterializations"]
    assert kpis[0]["runId"] == done[0]["runId"] and kpis[0]["partition"] == stack.rig_day
