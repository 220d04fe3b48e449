"""Dependencies of the routes, as ``Annotated`` aliases."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

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


# Where `service.limits.BodyLimitMiddleware` leaves the tenant it found in the headers, in the request's state.
TENANT_STATE = "tenant"


def _keys(bearer: HTTPAuthorizationCredentials | None, apikey: str | None) -> list[str]:
    """The API keys offered, in the order they are tried: the Bearer key, then the legacy header."""
    return [c for c in (bearer.credentials if bearer else None, apikey) if c]


async def offered_keys(connection: HTTPConnection) -> list[str]:
    """The API keys a request's headers offer, read exactly as the routes' security schemes read them."""
    return _keys(await bearer_scheme(connection), await apikey_scheme(connection))


async def authenticate(manager: JobManager, keys: list[str]) -> str:
    """The tenant of the first valid key of `keys`, or Unauthorized; the request is counted against that key's
    rate limit (RateLimited past it). Once per request: a request with a body is authenticated before its body
    is read (service.limits), and its route reuses the tenant found."""
    if not keys:
        raise Unauthorized()
    found = await manager.key_owner(keys)
    if found is None:
        raise Unauthorized("the API key is not valid")
    tenant, key_hash = found
    await manager.spend_request(key_hash)
    return tenant


async def get_tenant(
    request: Request,
    manager: ManagerDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    apikey: Annotated[str | None, Depends(apikey_scheme)],
) -> str:
    """The tenant of the request's API key; the Bearer key is tried first, then the legacy header.

    A request with a body was authenticated from its headers before the body was read: its tenant is reused.
    """
    tenant = getattr(request.state, TENANT_STATE, None)
    if isinstance(tenant, str):
        return tenant
    return await authenticate(manager, _keys(bearer, apikey))


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
