"""The browser dashboard (docs/DASHBOARD.md): server-rendered pages of the same app, signed in with an API key
exchanged for a session cookie; its assets are packaged files served by the app (no CDN, no build step)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from service.dashboard import events, pages
from service.dashboard.web import HERE, STATIC_PREFIX, body_auth_of

__all__ = ["install_dashboard"]


def install_dashboard(app: FastAPI) -> None:
    app.include_router(pages.router)
    # Its forms are read only with a session (or, the sign-in form, held to a small size): service.limits.
    app.state.body_auth = body_auth_of(pages.router.routes)
    app.include_router(events.router)
    app.mount(STATIC_PREFIX, StaticFiles(directory=HERE / "static"), name="dashboard-static")
