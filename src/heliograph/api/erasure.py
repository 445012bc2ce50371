"""GDPR erasure of one user id: `DELETE /v1/user/{user_id}`.

Deletes every row keyed to the user (storage/lifecycle.py `erase_user` says exactly what that
covers) and answers with the rows removed per table. The audit line names the key that asked and
a keyed hash of the user id, never the id itself. Erasing an unknown id is not an error: it
answers zero counts, and is audited all the same (the request itself is what GDPR asks to trace).
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth import KeyCache
from ..storage import Store
from . import ApiError, authenticated, envelope

MAX_USER_ID_LENGTH = 1024


def erasure_routes(store: Store, keys: KeyCache) -> list[Route]:
    async def erase(request: Request) -> Response:
        user_id: str = request.path_params["user_id"]
        if not user_id or len(user_id) > MAX_USER_ID_LENGTH or "\x00" in user_id:
            raise ApiError(f"A user id must be 1 to {MAX_USER_ID_LENGTH} characters without NUL.")
        actor = f"key:{request.state.key_id}"
        erasure = await asyncio.to_thread(store.erase_user, user_id, project=request.state.key.project_id, actor=actor)
        return envelope({"subject": erasure.subject, "deleted": erasure.deleted,
                         "total": sum(erasure.deleted.values())})

    # `:path` so that ids with a slash in them ("tenant/42") can be erased too.
    return [Route("/v1/user/{user_id:path}", authenticated(keys, erase, scope="admin"), methods=["DELETE"])]
