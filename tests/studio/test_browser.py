"""The studio in a real browser (Debian's Chromium via playwright): a reviewer decides requests a running
``tether serve --studio`` holds and the requests complete accordingly; an annotator labels 20 pairs with
the keyboard on a phone-sized screen and the export holds them; another project answers 403."""

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from tests.serve.conftest import free_port, wait_until_up
from tests.serve.test_gateway import _Server

from tether.serve.keys import KeyStore
from tether.serve.store import connect
from tether.studio.accounts import Accounts
from tether.studio.app import create_studio
from tether.studio.projects import Projects, ProjectSpec

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright comes with the dev extra")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (.ci/run installs Debian's package)")
PASSWORD = "a long password"


def _browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])


def _log_in(page, base, name):
    page.goto(f"{base}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")


def test_a_reviewer_approves_and_rejects_requests_a_running_gateway_holds(tmp_path):
    db = f"sqlite:///{tmp_path / 'gateway.db'}"
    engine = connect(db)
    _, secret = KeyStore(engine).create("client")
    Accounts(engine).create("rita", PASSWORD, "reviewer")
    guards = tmp_path / "guards.yaml"
    guards.write_text("- {kind: regex, name: hold, mode: escalate, input: [forbidden]}\n")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tether.cli.main", "serve", "--model", "tiny:llama", "--db", db,
                               "--port", str(port), "--guards", str(guards), "--studio", "--max-tokens", "6",
                               "--review-timeout-s", "120"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**os.environ, "TETHER_LOG": "warning"})
    try:
        wait_until_up(server, f"http://127.0.0.1:{port}/health", timeout=90)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=secret, max_retries=0, timeout=150)

        def ask(text):
            try:
                reply = client.chat.completions.create(model="tiny:llama", messages=[{"role": "user", "content": text}],
                                                       max_tokens=6, temperature=0)
                return "answered", reply.choices[0].finish_reason
            except openai.BadRequestError as exc:
                return "refused", exc.code

        base = f"http://127.0.0.1:{port}/studio"
        with ThreadPoolExecutor(2) as pool, playwright.sync_playwright() as p:
            held = {text: pool.submit(ask, text) for text in ("forbidden one", "forbidden two")}
            browser = _browser(p)
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            _log_in(page, base, "rita")
            page.goto(f"{base}/review")
            while "pending: 2" not in page.inner_text("#counts"):
                time.sleep(0.1)
                page.reload()
            decided = {}
            for key, decision in (("a", "approved"), ("r", "rejected")):
                with page.expect_navigation():
                    page.keyboard.press("n")  # take the next item
                text = next(t for t in held if t in page.inner_text("main"))
                assert not held[text].done()  # still held, waiting for this reviewer
                with page.expect_navigation():
                    page.keyboard.press(key)
                assert "Decided" in page.inner_text("#decided")
                decided[text] = decision
            browser.close()
            assert errors == []
            outcomes = {text: future.result(timeout=60) for text, future in held.items()}
        for text, decision in decided.items():
            if decision == "approved":
                assert outcomes[text][0] == "answered" and outcomes[text][1] in ("stop", "length")
            else:
                assert outcomes[text] == ("refused", "content_filter")
    finally:
        server.kill()
        server.wait()
        engine.dispose()


@pytest.fixture
def studio(tmp_path):
    engine = connect(f"sqlite:///{tmp_path / 'studio.db'}")
    server = _Server(create_studio(engine))
    yield engine, f"http://127.0.0.1:{server.port}"
    server.stop()
    engine.dispose()


def test_an_annotator_labels_20_pairs_with_the_keyboard_on_a_phone_and_the_export_holds_them(studio):
    engine, base = studio
    accounts, projects = Accounts(engine), Projects(engine)
    ann = accounts.create("ann", PASSWORD)
    accounts.create("boss", PASSWORD, "admin")
    project = projects.create("pairs", ProjectSpec(kind="pairwise", overlap=1, instructions="Pick the better reply."))
    other = projects.create("secret", ProjectSpec(kind="pairwise"))
    projects.add_member(project, ann.id)
    projects.add_items(project, [(str(i), {"prompt": f"Question {i}: " + "long words " * 30,
                                           "responses": [f"first answer {i}", f"second answer {i}"], "n": i})
                                 for i in range(20)])
    projects.add_items(other, [("0", {"prompt": "hidden", "responses": ["x", "y"]})])
    with playwright.sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        _log_in(page, base, "ann")
        assert "secret" not in page.inner_text("main")
        # Wait for the project page to load: its key handlers run at the end of the page, and an Enter pressed
        # before they do is lost (a race a person cannot lose, but a test can).
        with page.expect_navigation():
            page.click("text=pairs")
        with page.expect_navigation():
            page.keyboard.press("Enter")  # start labelling
        chosen = {}
        for _ in range(20):
            prompt = page.inner_text("#prompt")
            n = int(prompt.split(":")[0].split()[1])
            # Nothing is wider than the phone's screen (no sideways scrolling).
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            key = "1" if n % 3 else "2"
            with page.expect_navigation():
                page.keyboard.press(key)
            chosen[n] = int(key) - 1
        assert page.inner_text("#done").startswith("Nothing is left") and page.inner_text("#mine") == "20"
        response = page.goto(f"{base}/projects/{other.id}")
        assert response.status == 403 and "not a member" in page.inner_text("main")
        assert page.goto(f"{base}/projects/{other.id}/label").status == 403

        # An admin downloads the export from the project's page.
        page.context.clear_cookies()
        _log_in(page, base, "boss")
        page.goto(f"{base}/projects/{project.id}")
        with page.expect_download() as download:
            page.click("text=Raw labels")
        rows = [json.loads(line) for line in open(download.value.path()).read().splitlines()]
        browser.close()
    assert errors == []
    assert len(rows) == 20 and {r["annotator"] for r in rows} == {"ann"}
    assert {r["n"]: r["value"]["choice"] for r in rows} == chosen
