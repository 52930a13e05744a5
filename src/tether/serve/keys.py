"""API keys: created with scopes, shown once, stored as a SHA-256 hash.

A key is ``tk-`` and 43 random URL-safe characters (256 bits), so a fast hash is safe to store: nothing
short enough to guess hides behind it, and a lookup by hash costs one indexed query. The store is any
SQLAlchemy database (:mod:`tether.serve.store`): SQLite by default, PostgreSQL by URL.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import Field

from tether.core.config import Config
from tether.core.errors import UserError
from tether.serve.audit import AuditLog
from tether.serve.store import DEFAULT_DB, KEYS, connect, write_transaction


class Scopes(Config):
    """What a key may do."""

    models: list[str] = Field(default_factory=lambda: ["*"], description="models the key may call ('*': any)")
    max_tokens: int | None = Field(None, ge=1, description="most tokens one request may ask for (None: no cap)")
    rpm: int | None = Field(None, ge=1, description="requests per minute, across every server (None: no limit)")
    tpm: int | None = Field(None, ge=1, description="tokens per minute, prompt and reply, across every server")
    budget_tokens: int | None = Field(None, ge=1, description="tokens the key may use in all (None: no budget)")
    concurrent: int | None = Field(None, ge=1, description="requests in flight at once, across every server")
    guards: list[str] | None = Field(None, description="names of the server's guards that check this key's requests "
                                     "(None: every guard; [] none)")
    tools: list[Literal["code"]] = Field(default_factory=list, description="tools the key may call: code (run "
                                         "Python in the sandbox, /v1/tools/code); none by default")
    review: bool = Field(False, description="hold every request of this key for a person's decision in the review "
                         "queue (what a monitor's escalate action sets on a key whose traffic shifted)")
    admin: bool = Field(False, description="may set and clear kill switches through the admin API")
    tier: str | None = Field(None, description="the capability tier the key was made from (tether keys create "
                             "--tier), shown in listings")

    def allows_model(self, model: str) -> bool:
        """Whether the key may call ``model``."""
        return "*" in self.models or model in self.models


def load_tiers(path: str) -> dict[str, dict[str, Any]]:
    """Capability tiers from a YAML file: ``{TIER: {scope: value, ...}, ...}``, each checked as :class:`Scopes`.

    A tier is a named set of scopes (which models, how many tokens, which tools, which guards, what rates), so
    keys are made by capability level instead of flag by flag: practitioners' "throttles that limit
    capabilities".

    Raises:
        UserError: the file is missing, is not a mapping of mappings, or a tier has a scope that is not valid.
    """
    from pathlib import Path

    import yaml

    from tether.core.config import validate_config

    file = Path(path)
    if not file.is_file():
        raise UserError(f"{file}: no such tiers file")
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"{file}: not YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise UserError(f"{file}: expected a mapping of tier names to scopes ({{basic: {{rpm: 20, models: [...]}}}})")
    for name, scopes in raw.items():
        validate_config(Scopes, scopes, where=f"{file}: tier {name!r}")
    return {str(name): dict(scopes) for name, scopes in raw.items()}


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    id: str
    name: str
    scopes: Scopes
    created_at: float
    expires_at: float | None
    revoked_at: float | None

    def state(self, now: float | None = None) -> str:
        """``active``, ``revoked`` or ``expired``."""
        now = time.time() if now is None else now
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"


def hash_key(secret: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    """Keys in the gateway's database (:mod:`tether.serve.store`)."""

    def __init__(self, store: str | sa.Engine = DEFAULT_DB) -> None:
        self.engine = connect(store) if isinstance(store, str) else store
        self.audit = AuditLog(self.engine)  # creating, revoking and changing keys are audited

    def create(self, name: str, scopes: Scopes | None = None, *, expires_in: float | None = None,
               ) -> tuple[ApiKey, str]:
        """A new key and its secret (shown this once; only its hash is kept)."""
        secret = "tk-" + secrets.token_urlsafe(32)
        now = time.time()
        key = ApiKey("key_" + secrets.token_hex(6), name, scopes or Scopes(), now,
                     None if expires_in is None else now + expires_in, None)
        with write_transaction(self.engine) as conn:  # the key and its audit row commit together
            conn.execute(KEYS.insert().values(id=key.id, name=name, key_hash=hash_key(secret),
                                              scopes=key.scopes.model_dump(), created_at=now,
                                              expires_at=key.expires_at))
            self.audit.append_in(conn, {"decision": "key_created", "key": key.id, "name": name,
                                           "scopes": key.scopes.model_dump(exclude_defaults=True),
                                           "expires_at": key.expires_at})
        return key, secret

    def authenticate(self, secret: str) -> ApiKey | None:
        """The key ``secret`` belongs to, active or not; None for a secret no key has."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(KEYS).where(KEYS.c.key_hash == hash_key(secret))).first()
        return None if row is None else _key(row._mapping)

    def list(self) -> list[ApiKey]:
        """Every key, oldest first."""
        with self.engine.connect() as conn:
            return [_key(r._mapping) for r in conn.execute(sa.select(KEYS).order_by(KEYS.c.created_at))]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key (from its next request on).

        Raises:
            UserError: no key has that id.
        """
        with write_transaction(self.engine) as conn:
            revoked = conn.execute(KEYS.update().where(KEYS.c.id == key_id, KEYS.c.revoked_at.is_(None))
                                   .values(revoked_at=time.time())).rowcount
            row = conn.execute(sa.select(KEYS).where(KEYS.c.id == key_id)).first()
            if revoked:
                self.audit.append_in(conn, {"decision": "key_revoked", "key": key_id})
        if row is None:
            raise UserError(f"no key {key_id!r} (tether keys list shows them)")
        return _key(row._mapping)


def update_scopes_in(conn: sa.Connection, key_id: str, change: Callable[[Scopes], dict[str, Any]]) -> Scopes | None:
    """Change a key's scopes inside the caller's transaction (the row locked while it is read and written):
    ``change`` gets the scopes and returns the fields to set; the new scopes, or None for no such key. Every
    server reads a key's scopes on each request, so the change holds everywhere from the next one."""
    query = sa.select(KEYS.c.scopes).where(KEYS.c.id == key_id)
    row = conn.execute(query.with_for_update() if conn.dialect.name != "sqlite" else query).first()
    if row is None:
        return None
    old = Scopes.model_validate(row.scopes)
    scopes = Scopes.model_validate({**old.model_dump(), **change(old)})
    conn.execute(KEYS.update().where(KEYS.c.id == key_id).values(scopes=scopes.model_dump()))
    return scopes


def _key(row: Any) -> ApiKey:
    return ApiKey(row["id"], row["name"], Scopes.model_validate(row["scopes"]), row["created_at"],
                  row["expires_at"], row["revoked_at"])
