"""Provider keys a project lets the gateway hold: sealed in the store, open only in memory.

    SecretBox      Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) keyed by the `secret_key`
                   setting: a Fernet key (urlsafe base64 of 32 bytes) is used as is; any other value is
                   a passphrase of at least MIN_PASSPHRASE characters, stretched with scrypt
                   (n=2**15, r=8, p=1) under a fixed salt, so every gateway of a database derives the
                   same key without reading anything from the store
    fingerprint    all that is ever shown of a key: `sk-…abcd`, its first 3 and last 4 characters
    ProviderKeys   put / fingerprints / delete for the CLI and the admin API (the store sees ciphertext and
                   fingerprints only), and every project's keys opened in memory, reloaded in a
                   thread every RELOAD_EVERY seconds; the proxy asks `keys_of` per call (a dict
                   lookup), never the store

A key is never logged, never returned, never put in a record: messages name the project and the
provider, never the key.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .proxy.routes import with_overrides
from .storage import Store

log = logging.getLogger("heliograph.vault")

RELOAD_EVERY = 5.0
MIN_PASSPHRASE = 16
MAX_KEY_CHARS = 8192
SALT = b"heliograph provider keys v1"
NO_KEYS: Mapping[str, str] = {}
HOW_TO_SET = ("set HELIOGRAPH_SECRET_KEY (or secret_key in the config file) to a Fernet key, e.g. from "
              "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`, "
              f"or to a passphrase of {MIN_PASSPHRASE}+ characters")


class VaultError(ValueError):
    """A provider key that cannot be stored or opened; the message says why and what to do."""


def known_providers(upstreams: Mapping[str, str]) -> tuple[str, ...]:
    """Providers a key may be stored for: the proxy's route table, with HELIOGRAPH_UPSTREAM_* added."""
    return tuple(sorted(with_overrides(dict(upstreams))))


def fingerprint(key: str) -> str:
    """`sk-…abcd`; a key too short to spare 7 characters shows none."""
    return f"{key[:3]}…{key[-4:]}" if len(key) >= 16 else "…"


def clean_key(key: str) -> str:
    """The key as it will be sent in a header: surrounding whitespace (a pasted newline) removed."""
    key = key.strip()
    if not key:
        raise VaultError("the provider key is empty")
    if len(key) > MAX_KEY_CHARS:
        raise VaultError(f"the provider key is longer than {MAX_KEY_CHARS} characters")
    if not key.isascii() or not key.isprintable():
        raise VaultError("the provider key must be printable ASCII (it is sent as an HTTP header)")
    return key


def fernet_key(secret_key: str) -> bytes:
    try:
        if len(secret_key) == 44 and len(base64.urlsafe_b64decode(secret_key)) == 32:
            return secret_key.encode()
    except (binascii.Error, ValueError):
        pass
    if len(secret_key) < MIN_PASSPHRASE:
        raise VaultError(f"HELIOGRAPH_SECRET_KEY is neither a Fernet key nor a passphrase of {MIN_PASSPHRASE}+ "
                         f"characters; {HOW_TO_SET}")
    derived = Scrypt(salt=SALT, length=32, n=2**15, r=8, p=1).derive(secret_key.encode())
    return base64.urlsafe_b64encode(derived)


class SecretBox:
    def __init__(self, secret_key: str) -> None:
        self._fernet = Fernet(fernet_key(secret_key))

    def seal(self, key: str) -> str:
        return self._fernet.encrypt(key.encode()).decode("ascii")

    def open(self, ciphertext: str) -> str:
        return self._fernet.decrypt(ciphertext.encode("ascii")).decode()


class ProviderKeys:
    def __init__(self, store: Store, secret_key: str, providers: Iterable[str]) -> None:
        self.store = store
        self.secret_key = secret_key
        self.providers = tuple(providers)
        self._keys: dict[str, dict[str, str]] = {}      # project → provider → key
        self._opened: dict[str, str] = {}                # ciphertext → key, so a reload opens only new ones
        self.problem = ""                                # why some stored keys are not open; "" when all are

    @cached_property
    def box(self) -> SecretBox | None:
        """Derived on first use (scrypt takes ~0.1 s), so a gateway without stored keys never pays it."""
        return SecretBox(self.secret_key) if self.secret_key else None

    # -- the CLI and the admin API -----------------------------------------------------------------

    def check_can_store(self, provider: str) -> SecretBox:
        """The box to seal a key for `provider` with; VaultError saying what is missing (before a key is asked for)."""
        self._check_provider(provider)
        if self.box is None:
            raise VaultError(f"there is no secret key to encrypt provider keys with: {HOW_TO_SET}; every gateway "
                             "on this database needs the same value")
        return self.box

    def put(self, provider: str, key: str, *, project: str) -> dict[str, Any]:
        """Store (or replace) `project`'s key for `provider`: provider, fingerprint, created_at, updated_at."""
        box = self.check_can_store(provider)
        key = clean_key(key)
        row = self.store.put_provider_credential(provider, box.seal(key), fingerprint(key), project=project)
        return {"provider": row["provider"], "fingerprint": row["fingerprint"], "created_at": row["created_at"],
                "updated_at": row["updated_at"]}

    def fingerprints(self, *, project: str) -> list[dict[str, Any]]:
        return self.store.provider_credentials(project=project)

    def delete(self, provider: str, *, project: str) -> bool:
        self._check_provider(provider)
        return self.store.delete_provider_credential(provider, project=project)

    def _check_provider(self, provider: str) -> None:
        if provider not in self.providers:
            raise VaultError(f"unknown provider {provider!r}; known: {', '.join(self.providers)}")

    # -- the gateway ---------------------------------------------------------------------------------

    def keys_of(self, project: str) -> Mapping[str, str]:
        """`project`'s keys by provider (hot path: no store, no decryption)."""
        return self._keys.get(project, NO_KEYS)

    async def reload(self) -> None:
        """Read the sealed keys in a thread and open the new ones. Keys that cannot be opened are left
        out and said in `problem` (the start-up refuses then); a bad secret key raises VaultError."""
        await asyncio.to_thread(self._load)

    async def run_reloads(self) -> None:
        said = ""
        while True:
            await asyncio.sleep(RELOAD_EVERY)
            try:
                await self.reload()
            except Exception as exc:  # the store may be locked or down; keep the keys we have
                log.debug("provider keys not reloaded: %s", type(exc).__name__)
            if self.problem != said:     # once per new problem, not every 5 s
                if self.problem:
                    log.warning("%s", self.problem)
                said = self.problem

    def _load(self) -> None:
        rows = self.store.sealed_provider_credentials()
        keys: dict[str, dict[str, str]] = {}
        opened: dict[str, str] = {}
        unreadable: list[str] = []
        box = self.box
        for row in rows:
            sealed = row["ciphertext"]
            key = self._opened.get(sealed)
            if key is None and box is not None:
                try:
                    key = box.open(sealed)
                except (InvalidToken, UnicodeDecodeError):
                    key = None
            if key is None:
                unreadable.append(f"{row['provider']} of project {row['project_id']}")
                continue
            opened[sealed] = key
            keys.setdefault(row["project_id"], {})[row["provider"]] = key
        if not unreadable:
            self.problem = ""
        elif box is None:
            self.problem = (f"{len(rows)} provider key(s) are stored in the database but HELIOGRAPH_SECRET_KEY is "
                            "not set: set it to the secret key they were stored with, or delete them with "
                            "'heliograph provider-keys delete'")
        else:
            self.problem = (f"the stored provider key(s) {', '.join(sorted(unreadable))} cannot be decrypted with "
                            "this HELIOGRAPH_SECRET_KEY: set the one they were stored with, or store them again")
        self._keys, self._opened = keys, opened
