"""The OpenAI-compatible generator against a loopback endpoint: request shape, order, failures kept."""

from tether.models.generation import GenerationSettings
from tether.models.http import EndpointConfig, HTTPGenerator


def test_http_generator_sends_chat_requests_and_keeps_order(chat_endpoint, monkeypatch):
    monkeypatch.setenv("TARGET_KEY", "k")
    chat_endpoint.reply = lambda body: body["messages"][-1]["content"].upper()
    generator = HTTPGenerator(EndpointConfig(url=chat_endpoint.url + "/", model="m", api_key_env="TARGET_KEY",
                                             concurrency=3))
    settings = GenerationSettings(max_new_tokens=7, temperature=0.5, seed=10, stop=["\n"])
    prompts = ["a", [{"role": "system", "content": "s"}, {"role": "user", "content": "b"}], "c", "d"]
    out = generator.generate(prompts, settings)
    assert [c.text for c in out] == ["A", "B", "C", "D"]
    assert all(c.finish_reason == "stop" and c.error == "" for c in out)
    sent = {r["messages"][-1]["content"]: r for r in chat_endpoint.requests}
    assert sent["b"]["messages"][0] == {"role": "system", "content": "s"}
    assert sent["a"]["max_tokens"] == 7 and sent["a"]["temperature"] == 0.5 and sent["a"]["stop"] == ["\n"]
    assert sorted(r["seed"] for r in chat_endpoint.requests) == [10, 11, 12, 13]  # one seed per prompt


def test_http_generator_returns_failed_requests_as_errors_after_retrying(chat_endpoint):
    chat_endpoint.reply = lambda body: None if body["messages"][-1]["content"] == "bad" else "ok"
    generator = HTTPGenerator(EndpointConfig(url=chat_endpoint.url, retries=1))
    out = generator.generate(["good", "bad"], GenerationSettings())
    assert (out[0].text, out[0].finish_reason) == ("ok", "eos")
    assert (out[1].text, out[1].finish_reason) == ("", "error") and "HTTPError" in out[1].error
    assert sum(r["messages"][-1]["content"] == "bad" for r in chat_endpoint.requests) == 2
