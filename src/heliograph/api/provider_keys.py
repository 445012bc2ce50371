"""Provider keys the gateway holds for the key's project (admin scope): stored, never shown again.

    PUT    /v1/provider-keys/{provider}   {"key": "..."} → {provider, fingerprint, created_at, updated_at}
    GET    /v1/provider-keys              this project's: fingerprints (`sk-…abcd`) and times only
    DELETE /v1/provider-keys/{provider}   another project's is a 404, exactly like none

Sealed and opened in heliograph/vault.py; requests of the project that carry no credential of
their own use them (the deployment's HELIOGRAPH_PROVIDER_KEY_<P> after them).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth import KeyCache
from ..storage import Store
from ..vault import ProviderKeys, VaultError, known_providers
from . import ApiError, envelope, json_object, route
from .records import iso


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    return {"provider": row["provider"], "fingerprint": row["fingerprint"],
            "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"])}


def _sentence(exc: VaultError) -> str:
    text = str(exc)
    return text[:1].upper() + text[1:] + "."


def provider_key_routes(store: Store, keys: KeyCache, provider_keys: ProviderKeys | None) -> list[Route]:
    vault = provider_keys or ProviderKeys(store, "", known_providers({}))

    async def put(request: Request) -> Response:
        provider: str = request.path_params["provider"]
        secret = (await json_object(request)).get("key")
        if not isinstance(secret, str):
            raise ApiError("The body must be {\"key\": \"<the provider's API key>\"}.")
        try:
            row = await asyncio.to_thread(vault.put, provider, secret, project=request.state.key.project_id)
        except VaultError as exc:
            raise ApiError(_sentence(exc)) from None
        await vault.reload()        # used at once by this process, by the others within seconds
        return envelope(_shown(row))

    async def list_(request: Request) -> Response:
        rows = await asyncio.to_thread(vault.fingerprints, project=request.state.key.project_id)
        return envelope([_shown(row) for row in rows])

    async def delete(request: Request) -> Response:
        provider: str = request.path_params["provider"]
        try:
            deleted = await asyncio.to_thread(vault.delete, provider, project=request.state.key.project_id)
        except VaultError as exc:
            raise ApiError(_sentence(exc)) from None
        if not deleted:
            raise ApiError(f"This project holds no {provider} key.", 404)
        await vault.reload()
        return envelope({"provider": provider, "deleted": True})

    return [
        route(keys, "/v1/provider-keys/{provider}", put, "PUT", scope="admin"),
        route(keys, "/v1/provider-keys", list_, "GET", scope="admin"),
        route(keys, "/v1/provider-keys/{provider}", delete, "DELETE", scope="admin"),
    ]
