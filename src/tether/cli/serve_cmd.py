"""``tether serve`` (an OpenAI-compatible gateway in front of a model) and ``tether keys`` (its API keys)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from tether.serve.keys import DEFAULT_DB

DbOpt = Annotated[str, typer.Option("--db", help="the key store: a SQLAlchemy URL (SQLite file by default, "
                                                 "postgresql://... to share it between servers)")]

keys_app = typer.Typer(help="API keys of tether serve: created with scopes, shown once, stored hashed.",
                       no_args_is_help=True)


def serve(
    model: Annotated[str, typer.Option("--model", "-m", help="model directory, hub id, world:base or tiny:ARCH")],
    name: Annotated[str | None, typer.Option("--name", help="the model's name in the API (default: --model)")] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    db: DbOpt = DEFAULT_DB,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="tokens per reply when a request names none")] = 256,
    max_batch: Annotated[int, typer.Option("--max-batch", help="requests generated together at most")] = 32,
    max_tokens_limit: Annotated[int, typer.Option("--max-tokens-limit", help="tokens any request may ask for at "
                                                  "most, whatever its key allows")] = 4096,
) -> None:
    """Serve a model behind an OpenAI-compatible API (/v1/chat/completions, streamed or not, /v1/completions,
    /v1/models); every request needs an API key (tether keys create).

    Example: tether keys create me && tether serve --model world:base --port 8000
    """
    import uvicorn

    from tether.models.targets import target_generator
    from tether.serve.app import create_app
    from tether.serve.batching import BatchingGenerator
    from tether.serve.keys import KeyStore

    store = KeyStore(db)
    if not any(k.state() == "active" for k in store.list()):
        typer.echo(f"no active API key in {db}: every request will be refused (tether keys create NAME --db {db})")
    generator = BatchingGenerator(target_generator(model), max_batch=max_batch)
    app = create_app(generator, store, name or model, default_max_tokens=max_tokens,
                     max_tokens_limit=max_tokens_limit)
    typer.echo(f"serving {name or model} on http://{host}:{port}/v1   keys: {db}")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        generator.close()


@keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Argument(help="who or what the key is for")],
    models: Annotated[str, typer.Option("--models", help="comma-separated models the key may call ('*': any)")] = "*",
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", help="most tokens a request may ask for")] = None,
    expires_days: Annotated[float | None, typer.Option("--expires-days", help="expire after this many days")] = None,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Create a key and print its secret, this once (only its hash is stored).

    Example: tether keys create ci-bot --models world:base --max-tokens 128 --expires-days 30
    """
    from tether.serve.keys import KeyStore, Scopes

    scopes = Scopes(models=[m.strip() for m in models.split(",") if m.strip()], max_tokens=max_tokens)
    key, secret = KeyStore(db).create(name, scopes, expires_in=None if expires_days is None else expires_days * 86400)
    typer.echo(f"{key.id}  {name}  {json.dumps(scopes.model_dump())}")
    typer.echo(f"secret (shown once): {secret}")


@keys_app.command("list")
def list_keys(db: DbOpt = DEFAULT_DB) -> None:
    """Every key: id, name, state (active, revoked, expired) and scopes; never a secret."""
    from tether.serve.keys import KeyStore

    for key in KeyStore(db).list():
        typer.echo(f"{key.id}  {key.name}  {key.state()}  {json.dumps(key.scopes.model_dump())}")


@keys_app.command("revoke")
def revoke_key(key_id: Annotated[str, typer.Argument(help="the key's id (tether keys list)")],
               db: DbOpt = DEFAULT_DB) -> None:
    """Revoke a key: its next request is refused."""
    from tether.serve.keys import KeyStore

    key = KeyStore(db).revoke(key_id)
    typer.echo(f"{key.id}  {key.name}  {key.state()}")
