"""The gateway's API fuzzed from its own OpenAPI schema (schemathesis): whatever a client sends, with a
valid key or none, the answer is never a 5xx and every error is in OpenAI's shape."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.serve.app import Gateway, create_app
from tether.serve.batching import BatchingGenerator


class _Echo:
    """A model that answers at once, so the fuzzer's budget goes to the requests."""

    def generate(self, prompts, settings):
        from tether.models.generation import Completion

        return [Completion("ok", [1], finish_reason="eos") for _ in prompts]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    gateway = Gateway.open(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'g.db'}")
    _, secret = gateway.keys.create("fuzzer")
    generator = BatchingGenerator(_Echo(), window_s=0.0)
    app = create_app(generator, gateway, "echo")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.secret = secret
    yield schema
    generator.close()


def _check(case, headers):
    response = case.call(headers=headers)
    assert response.status_code < 500, (case.path, case.body, response.text)
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]


@pytest.mark.parametrize(("path", "method"), [("/v1/chat/completions", "POST"), ("/v1/completions", "POST"),
                                              ("/v1/models", "GET"), ("/admin/kill", "POST"),
                                              ("/admin/revive", "POST")])
def test_no_input_gives_a_server_error(api, path, method):
    operation = api[path][method]

    reached = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy(), authorised=st.booleans(), served_model=st.booleans())
    def fuzz(case, authorised, served_model):
        if served_model and isinstance(case.body, dict):  # the model this server serves: deeper than a 404
            case.body["model"] = "echo"
        _check(case, {"Authorization": f"Bearer {api.secret}"} if authorised else {})
        reached.append(case)

    fuzz()
    assert reached
