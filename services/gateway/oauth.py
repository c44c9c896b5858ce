"""OAuth2 client-credentials grant (RFC 6749 §4.4) for the dev / on-premise
issuer: registered clients with scrypt-hashed secrets, tokens minted with
the dev signing key. In AWS the issuer is Cognito and this endpoint is off.

The registry is a JSON file under the data directory, written by
`bmc clients add|remove`; the gateway re-reads it when it changes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from services.kit.files import exclusive_lock, write_private
from services.kit.tokens import ROLE_NAMES

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
CLIENT_ID = r"^[a-z0-9][a-z0-9._-]{2,63}$"


def hash_secret(secret: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.urlsafe_b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def secret_matches(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.urlsafe_b64decode(digest)
        actual = hashlib.scrypt(
            secret.encode(), salt=base64.urlsafe_b64decode(salt), dklen=len(expected), n=int(n), r=int(r), p=int(p)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@dataclass(frozen=True)
class Client:
    client_id: str
    secret_hash: str
    roles: tuple[str, ...]
    tenant: str = ""
    description: str = ""


class ClientError(ValueError):
    """A registration the registry refuses."""


class ClientRegistry:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = -1.0
        self._clients: dict[str, Client] = {}

    def _load(self) -> dict[str, Client]:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return {}
        if mtime != self._mtime:
            raw = json.loads(self.path.read_text())
            self._clients = {
                cid: Client(cid, c["secret_hash"], tuple(c["roles"]), c.get("tenant", ""), c.get("description", ""))
                for cid, c in raw.get("clients", {}).items()
            }
            self._mtime = mtime
        return self._clients

    def get(self, client_id: str) -> Client | None:
        return self._load().get(client_id)

    def all(self) -> list[Client]:
        return sorted(self._load().values(), key=lambda c: c.client_id)

    def _save(self, clients: dict[str, Client]) -> None:
        document = {
            "clients": {
                c.client_id: {
                    "secret_hash": c.secret_hash,
                    "roles": list(c.roles),
                    "tenant": c.tenant,
                    "description": c.description,
                }
                for c in clients.values()
            }
        }
        write_private(self.path, json.dumps(document, indent=2).encode())

    def add(self, client_id: str, roles: list[str], tenant: str = "", description: str = "") -> str:
        """Registers a client and returns its secret, which is stored only hashed."""
        if not re.match(CLIENT_ID, client_id):
            raise ClientError(f"client id {client_id!r} must match {CLIENT_ID}")
        unknown = [r for r in roles if r not in ROLE_NAMES]
        if unknown or not roles:
            raise ClientError(f"unknown roles {unknown}; choose from {', '.join(sorted(ROLE_NAMES))}")
        if "broker" in roles and not tenant:
            raise ClientError("a broker client needs --tenant")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.path.with_suffix(".lock")):
            clients = dict(self._load())
            if client_id in clients:
                raise ClientError(f"client {client_id!r} already exists; remove it first to rotate its secret")
            secret = secrets.token_urlsafe(32)
            clients[client_id] = Client(client_id, hash_secret(secret), tuple(roles), tenant, description)
            self._save(clients)
        return secret

    def remove(self, client_id: str) -> bool:
        with exclusive_lock(self.path.with_suffix(".lock")):
            clients = dict(self._load())
            if clients.pop(client_id, None) is None:
                return False
            self._save(clients)
            return True
