"""The studio over HTTP (FastAPI's test client, the real application on a real store): login and sessions,
roles and per-project access, CSRF on forms, and the world's simulated crowd labelling through the JSON API
with its export checked against gold."""

import json
import re

import pytest
from fastapi.testclient import TestClient

from tether.data.aggregate import dawid_skene
from tether.serve.keys import KeyStore, Scopes
from tether.serve.store import connect
from tether.studio.accounts import Accounts
from tether.studio.app import create_studio
from tether.studio.projects import Projects, ProjectSpec

PASSWORD = "correct horse battery"


@pytest.fixture
def studio(tmp_path):
    engine = connect(f"sqlite:///{tmp_path / 'studio.db'}")
    yield engine, TestClient(create_studio(engine))
    engine.dispose()


def _login(client, name):
    page = client.post("/login", data={"name": name, "password": PASSWORD}, follow_redirects=False)
    assert page.status_code == 303, page.text
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/").text).group(1)


def test_login_sessions_roles_and_per_project_access(studio):
    engine, client = studio
    accounts, projects = Accounts(engine), Projects(engine)
    ann = accounts.create("ann", PASSWORD)
    accounts.create("rev", PASSWORD, "reviewer")
    mine = projects.create("mine", ProjectSpec(kind="rating"))
    other = projects.create("other", ProjectSpec(kind="rating"))
    projects.add_member(mine, ann.id)
    projects.add_items(mine, [("r", {"prompt": "q", "response": "a reply"})])

    assert client.get("/", follow_redirects=False).headers["location"].endswith("/login")
    bad = client.post("/login", data={"name": "ann", "password": "wrong password"})
    assert bad.status_code == 401 and "wrong name or password" in bad.text
    page = client.post("/login", data={"name": "ann", "password": PASSWORD}, follow_redirects=False)
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "st-" in cookie
    csrf = _login(client, "ann")
    home = client.get("/").text
    assert "mine" in home and "other" not in home and "Review queue" not in home
    assert client.get(f"/projects/{other.id}").status_code == 403
    assert client.get(f"/projects/{other.id}/label").status_code == 403
    assert client.get("/review").status_code == 403
    assert client.get(f"/projects/{mine.id}/export").status_code == 403  # exports are the admins'

    label = client.get(f"/projects/{mine.id}/label").text
    item = re.search(r'name="item" value="(\d+)"', label).group(1)
    assert client.post(f"/projects/{mine.id}/label", data={"csrf": "forged", "item": item, "rating": "4"}
                       ).status_code == 403
    done = client.post(f"/projects/{mine.id}/label", data={"csrf": csrf, "item": item, "rating": "4"})
    assert done.status_code == 200 and 'id="done"' in done.text
    again = client.post(f"/projects/{mine.id}/label", data={"csrf": csrf, "item": item, "rating": "1"})
    assert again.status_code == 409  # a label is never overwritten
    assert [r["value"] for r in projects.labels(mine)] == [{"rating": 4}]

    client.post("/logout", data={"csrf": csrf})
    assert client.get("/", follow_redirects=False).status_code == 303  # the session is gone
    accounts.disable("ann")
    assert client.post("/login", data={"name": "ann", "password": PASSWORD}).status_code == 401


def test_the_api_takes_session_tokens_and_admin_keys_never_other_keys(studio):
    engine, client = studio
    Accounts(engine).create("ann", PASSWORD)
    assert client.get("/api/projects").status_code == 401
    token = client.post("/api/login", json={"name": "ann", "password": PASSWORD}).json()["token"]
    assert client.get("/api/projects", headers={"authorization": f"Bearer {token}"}).json() == {"projects": []}
    keys = KeyStore(engine)
    _, plain = keys.create("user key")
    _, admin = keys.create("admin key", Scopes(admin=True))
    assert client.get("/api/projects", headers={"authorization": f"Bearer {plain}"}).status_code == 401
    assert client.get("/api/projects", headers={"authorization": f"Bearer {admin}"}).status_code == 200


@pytest.mark.slow  # 5 s; labelling through the API and the aggregators each have tests of their own here
def test_the_world_crowd_labels_through_the_api_and_its_export_beats_majority_against_gold(studio):
    from tether.world.annotators import DEFAULT_POOL
    from tether.world.datasets import crowd_rows
    from tether.world.spec import WorldConfig, build_world

    engine, client = studio
    accounts, projects = Accounts(engine), Projects(engine)
    rows = crowd_rows(build_world(WorldConfig(seed=0)), 40, seed=0)
    pairs = {}
    for r in rows:
        pairs.setdefault(r["pair"], r)
    project = projects.create("crowd", ProjectSpec(kind="pairwise", overlap=len(DEFAULT_POOL)))
    projects.add_items(project, [(p, {"prompt": r["prompt"], "responses": [r["first"], r["second"]], "pair": p})
                                 for p, r in pairs.items()])
    verdicts = {(r["pair"], r["annotator"]): r["first_wins"] for r in rows}
    for annotator in DEFAULT_POOL:
        accounts.create(annotator.name, PASSWORD)
        projects.add_member(project, accounts.by_name(annotator.name).id)
        auth = {"authorization": "Bearer " + client.post("/api/login", json={"name": annotator.name,
                                                                            "password": PASSWORD}).json()["token"]}
        while (got := client.post(f"/api/projects/{project.id}/next", headers=auth)).status_code == 200:
            item = got.json()
            choice = 0 if verdicts[(item["meta"]["pair"], annotator.name)] else 1
            assert client.post(f"/api/projects/{project.id}/items/{item['id']}/label", headers=auth,
                               json={"value": {"choice": choice}}).status_code == 200
        assert got.status_code == 204
    accounts.create("boss", PASSWORD, "admin")
    boss = {"authorization": "Bearer " + client.post("/api/login", json={"name": "boss", "password": PASSWORD}
                                                     ).json()["token"]}
    exported = [json.loads(line) for line in client.get(f"/api/projects/{project.id}/export?format=preference"
                                                        "&method=dawid-skene", headers=boss).text.splitlines()]
    assert len(exported) == len(pairs)
    # The export is Dawid-Skene on exactly the labels given in memory: the API loses and changes nothing.
    annotations = [(r["pair"], r["annotator"], r["first_wins"]) for r in rows]
    expected = dawid_skene(annotations).labels
    for row in exported:
        truth = pairs[row["pair"]]
        assert (row["chosen"] == truth["first"]) == expected[row["pair"]]
    gold = {p: r["gold"] for p, r in pairs.items() if r["gold"] != 0.5}
    ds = sum((row["chosen"] == pairs[row["pair"]]["first"]) == (gold[row["pair"]] == 1.0)
             for row in exported if row["pair"] in gold) / len(gold)
    majority = [json.loads(line) for line in client.get(f"/api/projects/{project.id}/export?format=preference"
                                                        "&method=majority", headers=boss).text.splitlines()]
    mv = sum((row["chosen"] == pairs[row["pair"]]["first"]) == (gold[row["pair"]] == 1.0)
             for row in majority if row["pair"] in gold) / len(gold)
    assert ds >= mv  # measured on 40 pairs of world 0; the README's figures are over three worlds
    agreement = client.get(f"/api/projects/{project.id}/agreement", headers=boss).json()
    assert set(agreement["annotators"]) == {a.name for a in DEFAULT_POOL}
    _login(client, "boss")  # the admin's page shows the same alpha, with its interval, and each annotator
    page = client.get(f"/projects/{project.id}").text
    alpha = agreement["alpha"]
    shown = page[page.index('id="alpha"'):page.index("</p>", page.index('id="alpha"'))]
    assert f"<strong>{alpha['value']:.3f}</strong>" in shown and " – " in shown, shown  # its own 200 resamples
    assert all(f"<td>{a.name}</td>" in page for a in DEFAULT_POOL)
