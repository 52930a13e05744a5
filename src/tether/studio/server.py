"""The studio as a server of its own (``tether studio serve``), or mounted at ``/studio`` on ``tether serve``
(``--studio``), where reviewers decide the requests the gateway holds: one store, one process or many."""

from __future__ import annotations

import gc
import json
import os
from typing import Any

from tether.serve.server import ENV, ServeConfig, build
from tether.serve.store import connect
from tether.studio.app import create_studio

STUDIO_ENV = "TETHER_STUDIO_DB"


def build_gateway(cfg: ServeConfig) -> tuple[Any, Any]:
    """``tether serve``'s application, with the studio mounted at ``/studio`` when ``cfg.studio``."""
    app, generator = build(cfg)
    if cfg.studio:
        app.mount("/studio", create_studio(app.state.gateway.engine))
    return app, generator


def gateway_from_env() -> Any:
    """A gateway worker's application with the studio (uvicorn's ``factory``), from ``TETHER_SERVE_CONFIG``."""
    app, _ = build_gateway(ServeConfig.model_validate(json.loads(os.environ[ENV])))
    return app


def studio_app(db: str) -> Any:
    """The studio alone on the store at ``db``."""
    app = create_studio(connect(db))
    gc.collect()
    gc.freeze()
    return app


def studio_from_env() -> Any:
    """A studio worker's application (uvicorn's ``factory``), from ``TETHER_STUDIO_DB``."""
    return studio_app(os.environ[STUDIO_ENV])
