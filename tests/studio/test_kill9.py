"""``kill -9`` of a running studio (``tether studio serve``, a real process) loses nothing it acknowledged:
claimed and pending review items, labels, and an annotator's held item are all there after a restart."""

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
from tests.serve.conftest import free_port, wait_until_up

from tether.serve.review import ReviewQueue
from tether.serve.store import connect, write_transaction
from tether.studio.accounts import Accounts
from tether.studio.projects import Projects, ProjectSpec

PASSWORD = "a long password"


def _start(db, port):
    proc = subprocess.Popen([sys.executable, "-m", "tether.cli.main", "studio", "serve", "--db", db,
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return wait_until_up(proc, f"http://127.0.0.1:{port}/login")


def _token(base, name):
    return {"authorization": "Bearer " + httpx.post(f"{base}/api/login", json={"name": name, "password": PASSWORD}
                                                    ).json()["token"]}


def test_kill_9_with_items_claimed_and_pending_loses_none(tmp_path):
    db = f"sqlite:///{tmp_path / 'studio.db'}"
    engine = connect(db)
    accounts, projects, queue = Accounts(engine), Projects(engine), ReviewQueue(engine)
    rev = accounts.create("rev", PASSWORD, "reviewer")
    ann = accounts.create("ann", PASSWORD)
    project = projects.create("p", ProjectSpec(kind="pairwise", overlap=1))
    projects.add_member(project, ann.id)
    projects.add_items(project, [(str(i), {"prompt": f"q{i}", "responses": ["a", "b"]}) for i in range(200)])
    with write_transaction(engine) as conn:
        held = [queue.submit_in(conn, stage="input", guard="g", reason="r", conversation=[{"role": "user",
                                                                                            "content": str(i)}])
                for i in range(5)]

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start(db, port)
    reviewer, annotator = _token(base, "rev"), _token(base, "ann")
    claimed = httpx.post(f"{base}/api/review/claim", headers=reviewer).json()
    assert claimed["id"] == held[0] and claimed["state"] == "claimed"

    # An annotator labels as fast as the studio answers while it is killed: every acknowledged label survives.
    acknowledged, stop = [], threading.Event()

    def label():
        with httpx.Client(base_url=base, headers=annotator, timeout=5) as client:
            while not stop.is_set():
                try:
                    item = client.post(f"/api/projects/{project.id}/next").json()
                    if client.post(f"/api/projects/{project.id}/items/{item['id']}/label",
                                   json={"value": {"choice": 0}}).status_code == 200:
                        acknowledged.append(item["id"])
                except (httpx.TransportError, ValueError):
                    return

    worker = threading.Thread(target=label)
    worker.start()
    while len(acknowledged) < 15:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    worker.join()

    proc = _start(db, port)
    try:
        stored = {row["item"] for row in Projects(engine).labels(project)}
        assert set(acknowledged) <= stored and len(acknowledged) >= 15
        items = {i.id: i for i in ReviewQueue(engine).items()}
        assert set(held) <= set(items)
        assert items[held[0]].state == "claimed" and items[held[0]].claimed_by == rev.id
        assert all(items[i].state == "pending" for i in held[1:])
        # The reviewer's claim is theirs still, and nobody else is handed it.
        again = httpx.post(f"{base}/api/review/claim", headers=_token(base, "rev")).json()
        assert again["id"] == held[0]
        decided = httpx.post(f"{base}/api/review/{held[0]}/decide", headers=reviewer, json={"decision": "approved"})
        assert decided.status_code == 200  # the session survived too
    finally:
        proc.kill()
        proc.wait()
        engine.dispose()
