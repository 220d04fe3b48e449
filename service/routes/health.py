"""Liveness and readiness: open without a key."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel

from service.deps import ManagerDep

router = APIRouter(tags=["health"])


class Alive(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, str]


@router.get("/healthz", response_model=Alive)
async def healthz() -> Alive:
    """The process is up."""
    return Alive(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(manager: ManagerDep, response: Response) -> Readiness:
    """PostgreSQL and Redis are both reachable (503 otherwise, naming which is not)."""
    checks = await manager.readiness()
    ready = all(v == "ok" for v in checks.values())
    if not ready:
        response.status_code = 503
    return Readiness(status="ready" if ready else "not ready", checks=checks)
