"""``tether serve``'s configuration, and the application built from it (in this process, or in each of
``workers`` processes, which rebuild it from :data:`ENV` through :func:`tether.studio.server.gateway_from_env`,
the same build with the studio mounted when asked: every worker loads the model, and they share nothing but
the store, which is what keeps limits, switches and the audit chain whole)."""

from __future__ import annotations

import gc
from typing import Any, Literal

from pydantic import Field

from tether.core.config import Config
from tether.core.errors import UserError
from tether.core.sandbox import Sandbox, SandboxConfig
from tether.serve.store import DEFAULT_DB

ENV = "TETHER_SERVE_CONFIG"


class ServeConfig(Config):
    """``tether serve``."""

    model: str = Field(description="model directory, hub id, world:base, tiny:ARCH, or an OpenAI-compatible URL")
    upstream_model: str = Field("default", description="with a URL: the model name the upstream serves")
    name: str | None = Field(None, description="the model's name in the API (default: model)")
    db: str = Field(DEFAULT_DB, description="the gateway's store: a SQLAlchemy URL")
    redis: str | None = Field(None, description="redis://HOST:PORT/DB: count the per-minute limits there")
    max_tokens: int = Field(256, ge=1, description="tokens per reply when a request names none")
    max_tokens_limit: int = Field(4096, ge=1, description="tokens any request may ask for at most")
    max_batch: int = Field(32, ge=1, description="requests generated together at most")
    fail_open: bool = Field(False, description="serve when the store cannot be read")
    guards: str | None = Field(None, description="YAML file: a list of guards")
    block_input: list[str] = Field(default_factory=list, description="regexes that block a request")
    block_output: list[str] = Field(default_factory=list, description="regexes that cut a reply")
    code_tool: bool = Field(False, description="serve /v1/tools/code (Python in the sandbox) to keys allowed it")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig, description="the code tool's limits per run")
    sandbox_slots: int = Field(2, ge=1, description="programs the code tool runs at once (others wait)")
    review_timeout_s: float = Field(300.0, gt=0, description="how long a request a guard escalated waits for a "
                                    "reviewer before review_default applies")
    review_default: Literal["reject", "approve"] = Field("reject", description="what an escalated request gets when "
                                                         "no reviewer decided in time")
    studio: bool = Field(False, description="mount the studio (review queue, labelling) at /studio")
    monitor: str | None = Field(None, description="a calibrated monitor's directory (tether monitor calibrate): "
                                "watch the traffic beside the server")
    monitor_config: str | None = Field(None, description="YAML file: what the monitor's alarms do (actions, webhook; "
                                       "tether.serve.watch.WatchConfig)")
    rollout_check_s: float = Field(1.0, gt=0, description="how often a rollout's step is judged (tether rollout)")


def build(cfg: ServeConfig) -> tuple[Any, Any]:
    """The application and its batching generator (close it when the server stops)."""
    from tether.guard.base import load_guards
    from tether.models.targets import is_endpoint, target_generator
    from tether.serve.app import Gateway, create_app
    from tether.serve.batching import Backend, BatchingGenerator
    from tether.serve.rollout import Rollouts, Router
    from tether.serve.upstream import UpstreamBackend

    guards = load_guards(cfg.guards, cfg.block_input, cfg.block_output)
    sandbox = Sandbox(cfg.sandbox) if cfg.code_tool else None
    if sandbox is not None:
        sandbox.check()  # at start-up: a server that offers the tool must be able to isolate it
    gateway = Gateway.open(cfg.db, fail_closed=not cfg.fail_open, redis=cfg.redis)

    def load(source: str) -> Backend:  # the model, and a rollout's canary the same way
        if is_endpoint(source):
            return UpstreamBackend(source, cfg.upstream_model)
        return BatchingGenerator(target_generator(source), max_batch=cfg.max_batch)

    generator = load(cfg.model)
    name = cfg.name or cfg.model
    router = Router(Rollouts(gateway.engine), name, generator, load, guards_on={g.name for g in guards})
    app = create_app(generator, gateway, name, default_max_tokens=cfg.max_tokens,
                     max_tokens_limit=cfg.max_tokens_limit, guards=guards, sandbox=sandbox,
                     sandbox_slots=cfg.sandbox_slots, review_timeout_s=cfg.review_timeout_s,
                     review_default=cfg.review_default, watch=build_watch(cfg, gateway), rollouts=router,
                     rollout_check_s=cfg.rollout_check_s)
    app.state.gateway = gateway  # for what is mounted beside the API (the studio, on the same store)
    app.router.on_shutdown.append(generator.close)
    # Everything built so far (torch, transformers, the model, the app) lives as long as the server. A full
    # collection walking those ~260k objects took 135 ms on the test machine, a stall of every request in
    # flight; frozen, they are left out of every collection.
    gc.collect()
    gc.freeze()
    return app, generator


def build_watch(cfg: ServeConfig, gateway: Any) -> Any:
    """The monitor ``cfg.monitor`` names, in a process of its own beside ``gateway``, whose group commit
    stores what it finds (None when it names none).

    Raises:
        UserError: the monitor directory or the actions file cannot be read.
    """
    if cfg.monitor is None:
        return None
    from tether.core.config import load_config
    from tether.monitor.watcher import Monitor
    from tether.serve.watch import WatchConfig, WatchProcess

    try:
        Monitor.load(cfg.monitor)  # here, so that a bad directory stops the server, not the monitor's process
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"--monitor {cfg.monitor}: {exc}") from None
    watch_cfg = load_config(WatchConfig, cfg.monitor_config) if cfg.monitor_config else WatchConfig()
    return WatchProcess(cfg.monitor, lambda write: gateway.commits.submit(write).result(), gateway.audit, watch_cfg)
