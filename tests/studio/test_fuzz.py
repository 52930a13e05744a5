"""The studio's API and forms fuzzed from its own OpenAPI schema (schemathesis): logged in or not, whatever
is sent, the answer is never a 5xx, and JSON errors are in the studio's shape."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.serve.review import ReviewQueue
from tether.serve.store import connect, write_transaction
from tether.studio.accounts import Accounts
from tether.studio.app import create_studio
from tether.studio.projects import Projects, ProjectSpec


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    engine = connect(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 's.db'}")
    accounts, projects = Accounts(engine), Projects(engine)
    boss = accounts.create("boss", "the boss password", "admin")
    project = projects.create("p", ProjectSpec(kind="pairwise", overlap=2))
    projects.add_member(project, boss.id)
    projects.add_items(project, [(str(i), {"prompt": f"q{i}", "responses": ["a", "b"]}) for i in range(50)])
    with write_transaction(engine) as conn:
        ReviewQueue(engine).submit_in(conn, stage="input", guard="g", reason="r",
                                      conversation=[{"role": "user", "content": "x"}])
    token, _ = accounts.open_session(boss)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_studio(engine))
    schema.token, schema.project = token, project.id
    yield schema
    engine.dispose()


def test_no_input_gives_a_server_error(api):
    operations = [op.ok() for op in api.get_all_operations()]
    assert len(operations) >= 15
    reached = []
    for operation in operations:
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=True)
        @given(case=operation.as_strategy(), authorised=st.booleans(), real_project=st.booleans())
        def fuzz(case, authorised, real_project):
            if real_project and case.path_parameters and "project_id" in case.path_parameters:
                case.path_parameters["project_id"] = api.project  # deeper than a 404
            response = case.call(headers={"Authorization": f"Bearer {api.token}"} if authorised else {})
            assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text[:500])
            if response.status_code >= 400 and "/api/" in case.formatted_path:
                assert response.json()["error"]["message"]
            reached.append(response.status_code)

        fuzz()
    assert 200 in reached and 401 in reached and 400 in reached
