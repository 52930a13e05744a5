"""The monitor's page in the studio, in a real browser (Debian's Chromium via playwright): after the monitor
saw one key's traffic shift, a reviewer sees a chart per signal with the alarms marked, the alarms
table with the action taken, the requests nearest an alarm, and the key's own traffic; an annotator is
refused the page and the API."""

import httpx
import pytest
from tests.monitor.test_watch import _normal, _odd
from tests.serve.test_gateway import _Server
from tests.studio.test_browser import CHROMIUM, PASSWORD, _browser, _log_in

from tether.monitor.watcher import Monitor, MonitorConfig
from tether.serve.app import Gateway
from tether.serve.watch import ActionRule, Watch, WatchConfig
from tether.studio.accounts import Accounts
from tether.studio.app import create_studio

playwright = pytest.importorskip("playwright.sync_api", reason="playwright comes with the dev extra")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (.ci/run installs Debian's package)")


def test_the_dashboard_shows_signals_and_alarms(tmp_path):
    gateway = Gateway.open(f"sqlite:///{tmp_path / 'g.db'}")
    shifty, _ = gateway.keys.create("shifty")
    reference = [{"prompt": _normal(i), "key": "old"} for i in range(400)]
    monitor = Monitor.calibrate(reference, MonitorConfig(window=10, arl_windows=1000, embedder="hash:128",
                                                         components=2, signals=["prompt:*"]))
    watch = Watch(monitor, lambda write: gateway.commits.submit(write).result(), gateway.audit,
                  WatchConfig(actions=[ActionRule(scope="key", action="throttle", rpm=1000)]))
    # What the gateway hands its monitor (tests/monitor/test_watch.py drives it through a running gateway):
    # thirty ordinary requests of the key, then twenty nothing like the reference.
    watch.process([{"prompt": _normal(i), "key": shifty.id, "response": "ok"} for i in range(30)]
                  + [{"prompt": _odd(i), "key": shifty.id, "response": "ok"} for i in range(20)])
    server = _Server(create_studio(gateway.engine))
    accounts = Accounts(gateway.engine)
    accounts.create("rita", PASSWORD, "reviewer")
    accounts.create("ann", PASSWORD, "annotator")
    try:
        base = f"http://127.0.0.1:{server.port}"
        with playwright.sync_playwright() as p:
            browser = _browser(p)
            page = browser.new_page()
            _log_in(page, base, "rita")
            page.click("text=Monitor")
            page.wait_for_selector("section.chart")
            signals = page.eval_on_selector_all("section.chart", "els => els.map(e => e.dataset.signal)")
            assert {"prompt:pc0", "prompt:pc1", "prompt:novel", "prompt:distance"} <= set(signals)
            assert page.locator("circle.alarm").count() >= 1  # marked on the charts
            first = page.locator("section.chart").first
            assert int(first.get_attribute("data-alarms")) >= 1  # signals that alarmed come first
            rows = page.locator("#alarms tr")
            assert rows.count() >= 2 and "noted" in page.inner_text("#alarms")  # no rule for all traffic
            page.select_option("#scope", f"key:{shifty.id}")  # the key's own traffic
            page.wait_for_url("**/monitor?scope=key*")
            assert page.locator("section.chart").count() >= 4 and page.locator("circle.alarm").count() >= 1
            assert f"throttle key:{shifty.id}" in page.inner_text("#alarms")
            with page.expect_navigation():
                page.locator("#alarms a").first.click()
            assert "SWdub3Jl" in page.inner_text("#examples")  # the shifted requests are the ones shown
            ann = browser.new_page()
            _log_in(ann, base, "ann")
            assert ann.goto(f"{base}/monitor").status == 403
            browser.close()
        token = httpx.post(f"{base}/api/login", json={"name": "ann", "password": PASSWORD}).json()["token"]
        denied = httpx.get(f"{base}/api/monitor/alarms", headers={"authorization": f"Bearer {token}"})
        assert denied.status_code == 403
        token = httpx.post(f"{base}/api/login", json={"name": "rita", "password": PASSWORD}).json()["token"]
        listed = httpx.get(f"{base}/api/monitor/alarms", headers={"authorization": f"Bearer {token}"}).json()
        assert listed["alarms"] and listed["alarms"][0]["examples"]
        series = httpx.get(f"{base}/api/monitor/windows?scope=all", headers={"authorization": f"Bearer {token}"})
        assert len(series.json()["windows"]) == 5  # 50 requests, windows of 10
    finally:
        server.stop()
