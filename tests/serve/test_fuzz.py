"""The gateway's API fuzzed from its own OpenAPI schema (schemathesis): whatever a client sends, with a
valid key or none, the answer is never a 5xx and every error is in OpenAI's shape."""

import shutil

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.core.sandbox import Sandbox, SandboxConfig
from tether.serve.app import Gateway, create_app
from tether.serve.batching import BatchingGenerator
from tether.serve.keys import Scopes


class _Echo:
    """A model that answers at once, so the fuzzer's budget goes to the requests."""

    def generate(self, prompts, settings):
        from tether.models.generation import Completion

        return [Completion("ok", [1], finish_reason="eos") for _ in prompts]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    gateway = Gateway.open(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'g.db'}")
    _, secret = gateway.keys.create("fuzzer", Scopes(tools=["code"]))
    generator = BatchingGenerator(_Echo(), window_s=0.0)
    # The code tool is fuzzed through the real sandbox where bubblewrap is installed (CI installs it).
    sandbox = Sandbox(SandboxConfig(time_s=2, cpu_s=1)) if shutil.which("bwrap") else None
    app = create_app(generator, gateway, "echo", sandbox=sandbox)
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
    return response.status_code


@pytest.mark.parametrize(("path", "method"), [("/v1/chat/completions", "POST"), ("/v1/completions", "POST"),
                                              ("/v1/models", "GET"), ("/admin/kill", "POST"),
                                              ("/admin/revive", "POST"), ("/v1/tools/code", "POST")])
def test_no_input_gives_a_server_error(api, path, method):
    operation = api[path][method]

    reached = []

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=True)
    @given(case=operation.as_strategy(), authorised=st.booleans(), served_model=st.booleans())
    def fuzz(case, authorised, served_model):
        if served_model and isinstance(case.body, dict):  # the model this server serves: deeper than a 404
            case.body["model"] = "echo"
        reached.append(_check(case, {"Authorization": f"Bearer {api.secret}"} if authorised else {}))

    fuzz()
    # Deeper than the validator: some generated requests were served (the admin API's key is no admin).
    assert reached and (200 in reached or path.startswith("/admin")), sorted(set(reached))
