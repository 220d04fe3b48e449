"""Liveness and readiness: open without a key."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.deps import ManagerDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(manager: ManagerDep) -> Any:
    """PostgreSQL and Redis are both reachable (503 otherwise, naming which is not)."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(3):
            async with manager.pool.connection() as conn:
                await conn.execute("SELECT 1")
        checks["postgres"] = "ok"
    except Exception as exc:  # any failure means "not ready"; the reason is reported
        checks["postgres"] = f"error: {type(exc).__name__}"
    try:
        if manager.redis is None:
            raise ConnectionError("not configured")
        async with asyncio.timeout(3):
            await manager.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
    )
