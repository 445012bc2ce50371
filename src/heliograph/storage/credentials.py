"""Provider credentials a project lets the gateway hold, as the store keeps them: sealed.

The store is handed ciphertext and a fingerprint (`sk-…abcd`), never a plaintext key; sealing
and opening happen in `heliograph.vault`. One row per (project, provider): storing again replaces
the key and keeps `created_at`.

Mixed into SQLStore, so both stores share it.
"""

from __future__ import annotations

import time
from typing import Any

from .executor import QueryMixin

_UPSERT = ("INSERT INTO provider_credentials (project_id, provider, ciphertext, fingerprint, created_at, updated_at) "
           "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (project_id, provider) DO UPDATE SET "
           "ciphertext = excluded.ciphertext, fingerprint = excluded.fingerprint, updated_at = excluded.updated_at")
_SHOWN = "provider, fingerprint, created_at, updated_at"


class ProviderCredentials(QueryMixin):
    """Mixed into SQLStore: the provider_credentials table (migration 026)."""

    def put_provider_credential(self, provider: str, ciphertext: str, fingerprint: str, *,
                                project: str) -> dict[str, Any]:
        """Store or replace `project`'s key for `provider`; the row as shown (no ciphertext)."""
        at = int(time.time() * 1000)
        with self._transaction() as tx:
            tx.execute(self._q(_UPSERT), (project, provider, ciphertext, fingerprint, at, at))
            row = tx.execute(self._q(f"SELECT {_SHOWN} FROM provider_credentials WHERE project_id = ? AND provider = ?"),
                             (project, provider)).fetchone()
        return dict(row)

    def provider_credentials(self, *, project: str) -> list[dict[str, Any]]:
        """`project`'s stored keys as they may be shown: provider, fingerprint, times."""
        return self._rows(self._q(f"SELECT {_SHOWN} FROM provider_credentials WHERE project_id = ? ORDER BY provider"),
                          (project,))

    def delete_provider_credential(self, provider: str, *, project: str) -> bool:
        """False when `project` holds no key for `provider` (another project's is never touched)."""
        with self._transaction() as tx:
            cur = tx.execute(self._q("DELETE FROM provider_credentials WHERE project_id = ? AND provider = ?"),
                             (project, provider))
            return int(cur.rowcount) > 0

    def sealed_provider_credentials(self) -> list[dict[str, Any]]:
        """Every project's keys, sealed (project_id, provider, ciphertext): for the gateway's in-memory copy."""
        return self._rows("SELECT project_id, provider, ciphertext FROM provider_credentials")
