"""``tether studio``: the labelling studio and review queue (serve it; its accounts, projects, exports)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tether.cli.serve_cmd import DbOpt
from tether.serve.store import DEFAULT_DB

if TYPE_CHECKING:

    pass

app = typer.Typer(help="People in the loop: the review queue and labelling studio (tether studio serve), its "
                       "accounts, projects and exports.", no_args_is_help=True)
users_app = typer.Typer(help="Studio accounts: annotators, reviewers, admins.\n\nExample: tether studio users add "
                             "alice --role reviewer", no_args_is_help=True)
projects_app = typer.Typer(help="Labelling projects: create, add items and members, agreement, export.\n\n"
                                "Example: tether studio projects create helpful --kind pairwise --data pairs.jsonl",
                           no_args_is_help=True)
review_app = typer.Typer(help="The review queue's decisions as data.\n\nExample: tether studio review export "
                              "--format guard --out reviewed.jsonl", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(projects_app, name="projects")
app.add_typer(review_app, name="review")


def _engine(db: str):
    from tether.serve.store import connect

    return connect(db)


def _password(from_stdin: bool) -> tuple[str, bool]:
    """The password: read from stdin (one line), else a new random one (shown once); and whether it was made."""
    import secrets

    if from_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    env = os.environ.get("TETHER_STUDIO_PASSWORD")
    if env:
        return env, False
    return secrets.token_urlsafe(12), True


@app.command("serve")
def serve(db: DbOpt = DEFAULT_DB,
          host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="port to listen on")] = 8100,
          workers: Annotated[int, typer.Option("--workers", min=1, help="server processes; they share the store")] = 1,
          ) -> None:
    """Serve the studio on the gateway's store: login, projects, labelling, the review queue.

    Example: tether studio users add alice --role reviewer && tether studio serve --port 8100
    """
    import uvicorn

    from tether.studio.accounts import Accounts
    from tether.studio.server import STUDIO_ENV, studio_app, studio_from_env

    if not Accounts(_engine(db)).users():
        typer.echo(f"no account in {db} yet: nobody can log in (tether studio users add NAME --role admin --db {db})")
    typer.echo(f"studio on http://{host}:{port}/   store: {db}")
    if workers > 1:
        os.environ[STUDIO_ENV] = db
        uvicorn.run(f"{studio_from_env.__module__}:{studio_from_env.__name__}", factory=True, workers=workers,
                    host=host, port=port, log_level="warning")
        return
    uvicorn.run(studio_app(db), host=host, port=port, log_level="warning")


@users_app.command("add")
def add_user(name: Annotated[str, typer.Argument(help="login name")],
             role: Annotated[str, typer.Option("--role", help="annotator, reviewer or admin")] = "annotator",
             password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin "
                                                          "(else TETHER_STUDIO_PASSWORD, else a new one, shown "
                                                          "once)")] = False,
             projects: Annotated[str | None, typer.Option("--projects", help="comma-separated projects to join")]
             = None,
             db: DbOpt = DEFAULT_DB) -> None:
    """Create an account.

    Example: tether studio users add alice --role annotator --projects helpfulness
    """
    from tether.studio.accounts import Accounts
    from tether.studio.projects import Projects

    engine = _engine(db)
    password, made = _password(password_stdin)
    accounts, registry = Accounts(engine), Projects(engine)
    wanted = [registry.need(p.strip()) for p in (projects or "").split(",") if p.strip()]  # all checked first
    user = accounts.create(name, password, role)
    for project in wanted:
        registry.add_member(project, user.id)
    typer.echo(f"account {user.name} ({user.role})" + (f" in {', '.join(p.name for p in wanted)}" if wanted else ""))
    if made:
        typer.echo(f"password (shown once): {password}")


@users_app.command("list")
def list_users(db: DbOpt = DEFAULT_DB) -> None:
    """List accounts.

    Example: tether studio users list --db postgresql+pg8000://postgres@127.0.0.1/gateway
    """
    from tether.studio.accounts import Accounts

    for user in Accounts(_engine(db)).users():
        typer.echo(f"{user.name}\t{user.role}" + ("\tdisabled" if user.disabled_at else ""))


@users_app.command("passwd")
def set_password(name: Annotated[str, typer.Argument(help="login name")],
                 password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read it from stdin")] = False,
                 db: DbOpt = DEFAULT_DB) -> None:
    """Set an account's password (its sessions end).

    Example: echo 'a new long password' | tether studio users passwd alice --password-stdin
    """
    from tether.studio.accounts import Accounts

    password, made = _password(password_stdin)
    Accounts(_engine(db)).set_password(name, password)
    typer.echo(f"password of {name} changed" + (f" (shown once): {password}" if made else ""))


@users_app.command("role")
def set_role(name: Annotated[str, typer.Argument(help="login name")],
             role: Annotated[str, typer.Argument(help="annotator, reviewer or admin")], db: DbOpt = DEFAULT_DB) -> None:
    """Change an account's role.

    Example: tether studio users role alice reviewer
    """
    from tether.studio.accounts import Accounts

    user = Accounts(_engine(db)).set_role(name, role)
    typer.echo(f"{user.name} is now {user.role}")


@users_app.command("disable")
def disable_user(name: Annotated[str, typer.Argument(help="login name")], db: DbOpt = DEFAULT_DB) -> None:
    """Disable an account: it cannot log in; its labels stay.

    Example: tether studio users disable alice
    """
    from tether.studio.accounts import Accounts

    Accounts(_engine(db)).disable(name)
    typer.echo(f"{name} disabled")


@projects_app.command("create")
def create_project(
    name: Annotated[str, typer.Argument(help="the project's name")],
    kind: Annotated[str, typer.Option("--kind", help="pairwise, ranking, rating, flags or critique")] = "pairwise",
    data: Annotated[list[Path] | None, typer.Option("--data", help="JSONL of items: any tether output (red-team "
                                                   "attacks, critique runs, samples, eval samples) or rows with "
                                                   "prompt and response(s); a 'gold' field makes a gold question")]
    = None,
    overlap: Annotated[int, typer.Option("--overlap", min=1, help="annotators per item")] = 3,
    members: Annotated[str | None, typer.Option("--members", help="comma-separated accounts")] = None,
    spec: Annotated[list[str] | None, typer.Option("--set", help="another spec key: scale=7, flags=[a,b], "
                                                   "gold_min=0.8, instructions=...")] = None,
    db: DbOpt = DEFAULT_DB,
) -> None:
    """Create a project, with its items and members.

    Example: tether studio projects create helpfulness --kind pairwise --data pairs.jsonl --overlap 3 --members a,b
    """
    from tether.core.config import load_config
    from tether.data.io import jsonl_objects
    from tether.studio.accounts import Accounts
    from tether.studio.projects import Projects, ProjectSpec

    engine = _engine(db)
    cfg = load_config(ProjectSpec, None, [f"kind={kind}", f"overlap={overlap}", *(spec or [])])
    accounts, registry = Accounts(engine), Projects(engine)
    people = [_need_user(accounts, n.strip()) for n in (members or "").split(",") if n.strip()]
    rows = [pair for path in data or [] for pair in jsonl_objects(path)]  # every file read before anything is made
    from tether.studio.projects import item_from_row

    for where, row in rows:  # checked before the project exists: a bad row leaves nothing behind
        try:
            item_from_row(row, cfg.kind)
        except ValueError as exc:
            from tether.core.errors import UserError

            raise UserError(f"{where}: {exc}") from None
    project = registry.create(name, cfg)
    added = registry.add_items(project, rows)
    for user in people:
        registry.add_member(project, user.id)
    typer.echo(f"project {project.name} ({cfg.kind}, overlap {cfg.overlap}): {added} items, "
               f"{len(people)} members")


@projects_app.command("add-items")
def add_items(project: Annotated[str, typer.Argument(help="the project")],
              data: Annotated[list[Path], typer.Option("--data", help="JSONL of items")],
              db: DbOpt = DEFAULT_DB) -> None:
    """Add items to a project (all of a file or none).

    Example: tether studio projects add-items helpful --data runs/redteam/attacks.jsonl
    """
    from tether.data.io import jsonl_objects
    from tether.studio.projects import Projects

    registry = Projects(_engine(db))
    target = registry.need(project)
    added = registry.add_items(target, [pair for path in data for pair in jsonl_objects(path)])
    typer.echo(f"{added} items added to {target.name}")


@projects_app.command("add-members")
def add_members(project: Annotated[str, typer.Argument(help="the project")],
                names: Annotated[str, typer.Argument(help="comma-separated accounts")], db: DbOpt = DEFAULT_DB) -> None:
    """Make accounts members of a project (an annotator sees only their projects).

    Example: tether studio projects add-members helpful alice,bob
    """
    from tether.studio.accounts import Accounts
    from tether.studio.projects import Projects

    engine = _engine(db)
    registry, accounts = Projects(engine), Accounts(engine)
    target = registry.need(project)
    people = [_need_user(accounts, n.strip()) for n in names.split(",") if n.strip()]
    added = sum(registry.add_member(target, u.id) for u in people)
    typer.echo(f"{added} members added to {target.name}")


@projects_app.command("list")
def list_projects(db: DbOpt = DEFAULT_DB) -> None:
    """List projects with their progress.

    Example: tether studio projects list
    """
    from tether.studio.projects import Projects

    registry = Projects(_engine(db))
    for p in registry.listing():
        progress = registry.progress(p)
        typer.echo(f"{p.name}\t{p.spec.kind}\titems {progress['items']} (gold {progress['gold']})\tlabels "
                   f"{progress['labels']}\tcomplete {progress['complete']}")


@projects_app.command("agreement")
def agreement(project: Annotated[str, typer.Argument(help="the project")], db: DbOpt = DEFAULT_DB) -> None:
    """Krippendorff's alpha with its bootstrap interval; each annotator's kappa, gold accuracy, speed (JSON).

    Example: tether studio projects agreement helpful
    """
    from tether.studio.projects import Projects

    registry = Projects(_engine(db))
    typer.echo(json.dumps(registry.agreement(registry.need(project)), indent=2))


@projects_app.command("export")
def export(project: Annotated[str, typer.Argument(help="the project")],
           out: Annotated[Path, typer.Option("--out", help="JSONL file to write (refused if it exists)")],
           fmt: Annotated[str, typer.Option("--format", help="raw, preference (pairwise, ranking), sft (pairwise, "
                                            "rating, critique), guard (flags)")] = "raw",
           method: Annotated[str, typer.Option("--method", help="dawid-skene, majority, bradley-terry (rankings) or "
                                               "raw (one row per label)")] = "dawid-skene",
           db: DbOpt = DEFAULT_DB) -> None:
    """Export labels: rows that tether train rm|dpo|sft and tether guard train read.

    Example: tether studio projects export helpfulness --format preference --out prefs.jsonl
    """
    from tether.core.errors import UserError
    from tether.data.io import write_jsonl
    from tether.studio.projects import Projects

    if out.exists():
        raise UserError(f"{out}: exists already (choose another --out; nothing is overwritten)")
    registry = Projects(_engine(db))
    rows = registry.export(registry.need(project), fmt, method=method)  # type: ignore[arg-type]
    write_jsonl(out, rows)
    typer.echo(f"{len(rows)} rows -> {out}")


@review_app.command("export")
def export_reviews(out: Annotated[Path, typer.Option("--out", help="JSONL file to write (refused if it exists)")],
                   fmt: Annotated[str, typer.Option("--format", help="guard (text/label rows for tether guard train) "
                                                    "or preference (edited replies over the model's)")] = "guard",
                   db: DbOpt = DEFAULT_DB) -> None:
    """The review queue's decisions as training data.

    Example: tether studio review export --format guard --out reviewed.jsonl && tether guard train --set
    'data=[world,reviewed.jsonl]' --out runs/guard-reviewed
    """
    from tether.core.errors import UserError
    from tether.data.io import write_jsonl
    from tether.serve.review import ReviewQueue, guard_rows, preference_rows

    if out.exists():
        raise UserError(f"{out}: exists already (choose another --out; nothing is overwritten)")
    if fmt not in ("guard", "preference"):
        raise UserError(f"--format {fmt!r}: expected guard or preference")
    items = ReviewQueue(_engine(db)).items(states=("approved", "rejected", "edited"), limit=10_000_000)
    rows = guard_rows(items) if fmt == "guard" else preference_rows(items)
    write_jsonl(out, rows)
    typer.echo(f"{len(rows)} rows -> {out}")


def _need_user(accounts, name: str):
    from tether.core.errors import UserError

    user = accounts.by_name(name)
    if user is None:
        raise UserError(f"no account named {name!r} (tether studio users add {name})")
    return user
