"""Dependencies of the routes, as ``Annotated`` aliases."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from crawljobs.exceptions import InvalidRequest, Unauthorized
from crawljobs.manager import JobManager

# Visible ASCII, spaces allowed inside (a header value's own spaces at either end are not part of it).
IDEMPOTENCY_KEY_PATTERN = r"^[!-~](?:[ -~]{0,253}[!-~])?$"
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)

bearer_scheme = HTTPBearer(auto_error=False, description="An API key made with `crawljobs keys create NAME`.")
apikey_scheme = APIKeyHeader(name="apikey", auto_error=False, description="The legacy header; same keys.")


def get_manager(request: Request) -> JobManager:
    manager: JobManager = request.app.state.manager
    return manager


ManagerDep = Annotated[JobManager, Depends(get_manager)]


async def get_tenant(
    manager: ManagerDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    apikey: Annotated[str | None, Depends(apikey_scheme)],
) -> str:
    """The tenant of the request's API key; the Bearer key is tried first, then the legacy header."""
    candidates = [c for c in (bearer.credentials if bearer else None, apikey) if c]
    if not candidates:
        raise Unauthorized()
    tenant = await manager.tenant_of_key(candidates)
    if tenant is None:
        raise Unauthorized("the API key is not valid")
    return tenant


TenantDep = Annotated[str, Depends(get_tenant)]


def get_idempotency_key(
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Send the same key again to get the original response back instead of a new submission. "
            "1 to 255 printable ASCII characters.",
            # Documented so that clients (and schema-driven tests) know the rule; checked below with a clear message.
            json_schema_extra={"minLength": 1, "maxLength": 255, "pattern": IDEMPOTENCY_KEY_PATTERN},
        ),
    ] = None,
) -> str | None:
    if idempotency_key is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise InvalidRequest(
            "Idempotency-Key must be 1 to 255 printable ASCII characters", field="Idempotency-Key"
        )
    return idempotency_key


IdempotencyKeyDep = Annotated[str | None, Depends(get_idempotency_key)]
