"""A model to talk to, named by one string: the URL of an OpenAI-compatible endpoint, or anything
``ModelConfig.path`` takes (a directory, a hub id, ``tiny:ARCH``, a registered source such as ``world:base``).

Red-teaming, judges and the attack reward take their targets this way, so a served model is attacked
and judged exactly as an in-process one.
"""

from __future__ import annotations

from tether.models.generation import Generator
from tether.models.http import EndpointOptions


def is_endpoint(target: str) -> bool:
    """Whether ``target`` is the URL of an endpoint (rather than a model to load)."""
    return target.startswith(("http://", "https://"))


def target_generator(target: str, endpoint: EndpointOptions | None = None) -> Generator:
    """``target`` as a :class:`Generator`: an HTTP client for a URL, the model loaded in-process otherwise."""
    if is_endpoint(target):
        from tether.models.http import EndpointConfig, HTTPGenerator

        return HTTPGenerator(EndpointConfig(url=target, **(endpoint or EndpointOptions()).model_dump()))
    from tether.models.generation import HFGenerator
    from tether.models.loading import ModelConfig, load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(ModelConfig(path=target))
    return HFGenerator(model, tokenizer)
