"""Resource names (AIP-122): `collection/id`, parsed once for every service."""

from __future__ import annotations

import re

from services.kit.errors import FieldViolation, InvalidArgument

# Ids the services hand out or accept: letters, digits and `._~-` (no `/`).
RESOURCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,99}")


def resource_id(name: str, collection: str, field: str = "name") -> str:
    """The id in `collection/{id}`, or INVALID_ARGUMENT naming `field`."""
    prefix = f"{collection}/"
    found = name[len(prefix) :] if name.startswith(prefix) else ""
    if not RESOURCE_ID.fullmatch(found):
        description = f"must look like {collection}/{{id}}"
        raise InvalidArgument(
            f"{field}: {name[:120]!r} {description}",
            reason="INVALID_NAME",
            violations=[FieldViolation(field, description, "INVALID_NAME")],
        )
    return found


def resource_name(collection: str, resource: str) -> str:
    return f"{collection}/{resource}"
