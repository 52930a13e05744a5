"""The studio's web application: pages for people (login, projects, labelling, the review queue) and a JSON
API for programs (the simulated crowd, scripts), on the gateway's store.

Pages are rendered on the server (Jinja2) and work without JavaScript (every choice is a button); a small
script adds one key per choice. Who may do what:

- anyone logged in: their projects (``/projects/ID`` answers 403 to a non-member; admins see all);
- reviewers and admins: the review queue (``/review``), where a claim gives one reviewer one item;
- admins: agreement and quality per project, exports.

Sessions are cookies (HttpOnly, SameSite=Strict, Secure behind https) holding a random token; every form
carries the session's CSRF token. The JSON API (``/api/...``) takes ``Authorization: Bearer`` with a
session token (``POST /api/login``) or an admin API key of the gateway (``tether keys create --admin``).
"""

from __future__ import annotations

import hmac
import json
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from tether.core.errors import UserError
from tether.serve.audit import AuditLog
from tether.serve.keys import KeyStore
from tether.serve.review import DecisionError, ReviewItem, ReviewQueue, guard_rows, preference_rows, reviewed_text
from tether.serve.store import write_transaction
from tether.studio import monitoring
from tether.studio.accounts import Accounts, Session, User
from tether.studio.projects import LabelError, Project, Projects

COOKIE = "tether_studio"
PAGE_BOOTSTRAP_LABELS = 3000  # a project page bootstraps alpha's interval up to this many labels
TEMPLATES = Path(__file__).parent / "templates"


class DeniedError(Exception):
    """A request that may not proceed: ``status`` 401 (not logged in), 403 (not allowed), 404, 409, 400."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class LoginBody(BaseModel):
    """``POST /api/login``."""

    name: str = Field(max_length=200)
    password: str = Field(max_length=1000)


class LabelBody(BaseModel):
    """``POST /api/projects/ID/items/ITEM/label``."""

    value: Any


class DecisionBody(BaseModel):
    """``POST /api/review/ID/decide``."""

    decision: str = Field(pattern="^(approved|rejected|edited)$")
    text: str | None = Field(None, max_length=100_000)
    note: str | None = Field(None, max_length=4000)


def create_studio(engine: sa.Engine, *, secure_cookies: bool | None = None, review_lease_s: float = 120.0) -> FastAPI:
    """The studio on ``engine`` (the gateway's store). ``secure_cookies``: mark the session cookie Secure
    (None: when the request came over https)."""
    accounts, projects = Accounts(engine), Projects(engine)
    queue, audit, keys = ReviewQueue(engine, lease_s=review_lease_s), AuditLog(engine), KeyStore(engine)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    app = FastAPI(title="tether studio", version="1", docs_url=None, redoc_url=None)

    def render(request: Request, template: str, session: Session | None, status: int = 200, **context: Any
               ) -> Response:
        context |= {"me": session.user if session else None, "csrf": session.csrf if session else "",
                    "base": _base(request)}
        return templates.TemplateResponse(request, template, context, status_code=status)

    def wants_html(request: Request) -> bool:
        return not request.url.path.startswith(f"{_base(request)}/api")

    @app.exception_handler(DeniedError)
    async def _denied(request: Request, exc: DeniedError) -> Response:
        if not wants_html(request):
            return JSONResponse({"error": {"message": exc.message, "status": exc.status}}, status_code=exc.status)
        if exc.status == 401:
            base = _base(request)
            return RedirectResponse(f"{base}/login", status_code=303)
        return render(request, "error.html", None, status=exc.status, message=exc.message, code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return await _denied(request, DeniedError(400, f"{where or 'request'}: {first.get('msg', 'invalid')}"))

    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError) -> Response:
        return await _denied(request, DeniedError(400, str(exc)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return await _denied(request, DeniedError(500, f"internal error: {type(exc).__name__}"))

    # --- who is asking ---
    def from_cookie(request: Request) -> Session:
        token = request.cookies.get(COOKIE, "")
        session = accounts.session(token) if token else None
        if session is None:
            raise DeniedError(401, "log in first")
        return session

    def from_bearer(request: Request) -> Session:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        session = accounts.session(token) if token.startswith("st-") else None
        if session is None and token.startswith("tk-"):
            key = keys.authenticate(token)
            if key is not None and key.state() == "active" and key.scopes.admin:
                # A gateway admin key acts as an admin of the studio (scripts that already hold one).
                session = Session(User(f"key:{key.id}", f"key:{key.name}", "admin", key.created_at), "", 0.0)
        if session is None:
            raise DeniedError(401, "missing or invalid token (Authorization: Bearer st-... from POST /api/login, or an "
                              "admin API key)")
        return session

    def check_csrf(session: Session, token: str) -> None:
        if not hmac.compare_digest(session.csrf, token or ""):
            raise DeniedError(403, "the form is stale or came from another site (reload the page)")

    def project_for(session: Session, project_id: str) -> Project:
        project = projects.get(project_id)
        if project is None:
            raise DeniedError(404, f"no project {project_id}")
        if not session.user.is_admin and not projects.is_member(project.id, session.user.id):
            raise DeniedError(403, f"you are not a member of project {project.name!r}")
        return project

    def person(session: Session) -> None:
        if session.user.id.startswith("key:"):
            raise DeniedError(403, "labels are given by people: log in with an account (POST /api/login)")

    def reviewer(session: Session) -> None:
        if not session.user.can_review:
            raise DeniedError(403, "the review queue is for reviewers and admins")

    def admin(session: Session) -> None:
        if not session.user.is_admin:
            raise DeniedError(403, "this is for admins")

    def decide(session: Session, item_id: str, decision: str, text: str | None, note: str | None) -> ReviewItem:
        # The decision and its audit row are one transaction: a decision the reviewer saw taken is audited.
        try:
            with write_transaction(engine) as conn:
                item = queue.decide(item_id, session.user.id, decision, text=text, note=note,  # type: ignore[arg-type]
                                    conn=conn)
                audit.append_in(conn, {"endpoint": "/studio/review", "key": None, "model": None, "status": 200,
                                       "decision": f"review_{decision}", "review_item": item_id,
                                       "reviewer": session.user.name})
        except DecisionError as exc:
            raise DeniedError(409, str(exc)) from None
        return item

    # --- pages ---
    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request) -> Response:
        return render(request, "login.html", None)

    @app.post("/login")
    def login(request: Request, name: str = Form(...), password: str = Form(...)) -> Response:
        user = accounts.verify(name, password)
        base = _base(request)
        if user is None:
            return render(request, "login.html", None, status=401, name=name,
                          error="wrong name or password (five failures in a row lock an account for a while)")
        token, session = accounts.open_session(user)
        response = RedirectResponse(f"{base}/", status_code=303)
        secure = request.url.scheme == "https" if secure_cookies is None else secure_cookies
        response.set_cookie(COOKIE, token, max_age=int(session.expires_at - time.time()), httponly=True,
                            samesite="strict", secure=secure, path=f"{base}/" if base else "/")
        return response

    @app.post("/logout")
    def logout(request: Request, csrf: str = Form("")) -> Response:
        session = from_cookie(request)
        check_csrf(session, csrf)
        accounts.close_session(request.cookies.get(COOKIE, ""))
        base = _base(request)
        response = RedirectResponse(f"{base}/login", status_code=303)
        response.delete_cookie(COOKIE, path=f"{base}/" if base else "/")
        return response

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request) -> Response:
        session = from_cookie(request)
        mine = projects.listing(None if session.user.is_admin else session.user.id)
        return render(request, "home.html", session, projects=[(p, projects.progress(p, session.user.id))
                                                                 for p in mine],
                      queue=queue.counts() if session.user.can_review else None)

    @app.get("/projects/{project_id}", response_class=HTMLResponse)
    def project_page(request: Request, project_id: str) -> Response:
        session = from_cookie(request)
        project = project_for(session, project_id)
        # The interval is bootstrapped on the page up to a few thousand labels (about a second); beyond, the
        # value alone, and `tether studio projects agreement` gives the interval.
        labels = projects.progress(project)["labels"]
        quality = (projects.agreement(project, resamples=200 if labels <= PAGE_BOOTSTRAP_LABELS else 0)
                   if session.user.is_admin else None)
        return render(request, "project.html", session, project=project,
                      progress=projects.progress(project, session.user.id), quality=quality)

    @app.get("/projects/{project_id}/label", response_class=HTMLResponse)
    def label_page(request: Request, project_id: str) -> Response:
        session = from_cookie(request)
        project = project_for(session, project_id)
        item = projects.next_item(project, session.user.id)
        return render(request, "label.html", session, project=project, item=item,
                      progress=projects.progress(project, session.user.id))

    @app.post("/projects/{project_id}/label")
    async def label_submit(request: Request, project_id: str) -> Response:
        session = from_cookie(request)
        form = await request.form()
        check_csrf(session, str(form.get("csrf", "")))
        project = project_for(session, project_id)
        try:
            item_id = int(str(form.get("item", "")))
        except ValueError:
            raise DeniedError(400, "item: expected a number") from None
        value = _form_value(project, form)
        try:
            projects.label(project, session.user.id, item_id, value)
        except LabelError as exc:
            raise DeniedError(409 if "already" in str(exc) else 400, str(exc)) from None
        base = _base(request)
        return RedirectResponse(f"{base}/projects/{project.id}/label", status_code=303)

    @app.get("/projects/{project_id}/export")
    def export_download(request: Request, project_id: str, format: str = "raw", method: str = "dawid-skene"
                        ) -> Response:
        session = from_cookie(request)
        project = project_for(session, project_id)
        admin(session)
        rows = projects.export(project, format, method=method)  # type: ignore[arg-type]
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        name = f"{project.name}-{format}.jsonl".replace("/", "_").replace('"', "")
        return Response(body, media_type="application/jsonl",
                        headers={"content-disposition": f'attachment; filename="{name}"'})

    @app.get("/review", response_class=HTMLResponse)
    def review_page(request: Request) -> Response:
        session = from_cookie(request)
        reviewer(session)
        return render(request, "review.html", session, counts=queue.counts(),
                      open=queue.items(states=("pending", "claimed"), limit=50), now=time.time())

    @app.post("/review/next")
    def review_next(request: Request, csrf: str = Form("")) -> Response:
        session = from_cookie(request)
        reviewer(session)
        check_csrf(session, csrf)
        item = queue.claim(session.user.id)
        base = _base(request)
        return RedirectResponse(f"{base}/review/{item.id}" if item else f"{base}/review?empty=1", status_code=303)

    @app.get("/review/{item_id}", response_class=HTMLResponse)
    def review_item_page(request: Request, item_id: str) -> Response:
        session = from_cookie(request)
        reviewer(session)
        item = queue.get(item_id)
        if item is None:
            raise DeniedError(404, f"no review item {item_id}")
        mine = item.state == "claimed" and item.claimed_by == session.user.id and (item.lease_until or 0) >= time.time()
        return render(request, "review_item.html", session, item=item, mine=mine, text=reviewed_text(item),
                      now=time.time())

    @app.post("/review/{item_id}")
    def review_decide(request: Request, item_id: str, csrf: str = Form(""), decision: str = Form(...),
                      text: str | None = Form(None), note: str | None = Form(None)) -> Response:
        session = from_cookie(request)
        reviewer(session)
        check_csrf(session, csrf)
        base = _base(request)
        if decision == "skip":
            queue.release(item_id, session.user.id)
            return RedirectResponse(f"{base}/review", status_code=303)
        if decision not in ("approved", "rejected", "edited"):
            raise DeniedError(400, f"decision {decision!r}: expected approved, rejected, edited or skip")
        decide(session, item_id, decision, text, note)
        return RedirectResponse(f"{base}/review?decided={item_id}", status_code=303)

    # --- the JSON API ---
    @app.get("/monitor", response_class=HTMLResponse)
    def monitor_page(request: Request, scope: str = "all", last: int = 200) -> Response:
        session = from_cookie(request)
        reviewer(session)
        rows = monitoring.windows(engine, scope, max(2, min(last, 2000)))
        raised = monitoring.alarms(engine, scope, limit=200)
        return render(request, "monitor.html", session, scope=scope, scopes=monitoring.scopes(engine),
                      charts=monitoring.charts(rows, raised), alarms=raised[:50], windows=len(rows),
                      geometry=(monitoring.WIDTH, monitoring.HEIGHT))

    @app.get("/monitor/alarms/{alarm_id}", response_class=HTMLResponse)
    def alarm_page(request: Request, alarm_id: int) -> Response:
        session = from_cookie(request)
        reviewer(session)
        found = monitoring.alarm(engine, alarm_id)
        if found is None:
            raise DeniedError(404, f"no alarm {alarm_id}")
        return render(request, "alarm.html", session, alarm=found)

    @app.get("/api/monitor/windows")
    def monitor_windows(request: Request, scope: str = "all", last: int = 200) -> dict[str, Any]:
        reviewer(from_bearer(request))
        return {"scope": scope, "windows": monitoring.windows(engine, scope, max(1, min(last, 10_000)))}

    @app.get("/api/monitor/alarms")
    def monitor_alarms(request: Request, scope: str | None = None, limit: int = 50) -> dict[str, Any]:
        reviewer(from_bearer(request))
        return {"alarms": monitoring.alarms(engine, scope, max(1, min(limit, 1000)))}

    @app.post("/api/login")
    def api_login(body: LoginBody) -> dict[str, Any]:
        user = accounts.verify(body.name, body.password)
        if user is None:
            raise DeniedError(401, "wrong name or password")
        token, session = accounts.open_session(user)
        return {"token": token, "expires_at": session.expires_at, "role": user.role}

    @app.get("/api/projects")
    def api_projects(request: Request) -> dict[str, Any]:
        session = from_bearer(request)
        mine = projects.listing(None if session.user.is_admin else session.user.id)
        return {"projects": [{"id": p.id, "name": p.name, **p.spec.model_dump(), "progress": projects.progress(p)}
                             for p in mine]}

    @app.post("/api/projects/{project_id}/next", response_model=None)
    def api_next(request: Request, project_id: str) -> Any:
        session = from_bearer(request)
        person(session)
        item = projects.next_item(project_for(session, project_id), session.user.id)
        if item is None:
            return Response(status_code=204)
        return {"id": item.id, "prompt": item.prompt, "responses": item.responses, "meta": item.meta}

    @app.post("/api/projects/{project_id}/items/{item_id}/label")
    def api_label(request: Request, project_id: str, item_id: int, body: LabelBody) -> dict[str, Any]:
        session = from_bearer(request)
        person(session)
        project = project_for(session, project_id)
        try:
            return {"item": item_id, "value": projects.label(project, session.user.id, item_id, body.value)}
        except LabelError as exc:
            raise DeniedError(409 if "already" in str(exc) else 400, str(exc)) from None

    @app.get("/api/projects/{project_id}/agreement")
    def api_agreement(request: Request, project_id: str) -> dict[str, Any]:
        session = from_bearer(request)
        project = project_for(session, project_id)
        admin(session)
        return projects.agreement(project)

    @app.get("/api/projects/{project_id}/export")
    def api_export(request: Request, project_id: str, format: str = "raw", method: str = "dawid-skene") -> Response:
        session = from_bearer(request)
        project = project_for(session, project_id)
        admin(session)
        rows = projects.export(project, format, method=method)  # type: ignore[arg-type]
        return Response("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), media_type="application/jsonl")

    @app.post("/api/review/claim", response_model=None)
    def api_claim(request: Request) -> Any:
        session = from_bearer(request)
        reviewer(session)
        person(session)
        item = queue.claim(session.user.id)
        return Response(status_code=204) if item is None else item.as_dict()

    @app.post("/api/review/{item_id}/decide")
    def api_decide(request: Request, item_id: str, body: DecisionBody) -> dict[str, Any]:
        session = from_bearer(request)
        reviewer(session)
        return decide(session, item_id, body.decision, body.text, body.note).as_dict()

    @app.post("/api/review/{item_id}/release")
    def api_release(request: Request, item_id: str) -> dict[str, Any]:
        session = from_bearer(request)
        reviewer(session)
        return {"released": queue.release(item_id, session.user.id)}

    @app.get("/api/review/export")
    def api_review_export(request: Request, format: str = "guard") -> Response:
        session = from_bearer(request)
        admin(session)
        items = queue.items(states=("approved", "rejected", "edited"), limit=1_000_000)
        rows = guard_rows(items) if format == "guard" else preference_rows(items) if format == "preference" else None
        if rows is None:
            raise DeniedError(400, f"format {format!r}: expected guard or preference")
        return Response("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), media_type="application/jsonl")

    return app


def _base(request: Request) -> str:
    """Where the studio is mounted (``/studio`` under tether serve, nothing when served alone)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _form_value(project: Project, form: Any) -> Any:
    """A label from a page's form (the buttons and fields label.html draws for the project's kind)."""
    kind = project.spec.kind
    try:
        if kind == "pairwise":
            return {"choice": int(form.get("choice", ""))}
        if kind == "ranking":
            return {"order": [int(x) for x in str(form.get("order", "")).split(",") if x.strip()]}
        if kind == "rating":
            return {"rating": int(form.get("rating", ""))}
        if kind == "flags":
            return {"flags": [str(f) for f in form.getlist("flags")]}
    except ValueError:
        raise DeniedError(400, f"the {kind} form's value is not a number") from None
    return {"critique": str(form.get("critique", "")), "revision": str(form.get("revision", ""))}
