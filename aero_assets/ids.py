"""Identifiers that become file paths and Dagster partition keys (run ids, session ids, ...).

A run id travels from a rig into folder names and partition keys, so it is validated at the
door: a `/`, a `..` or a control character must never reach the file system.
"""

from __future__ import annotations

import re

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class InvalidIdentifier(ValueError):
    pass


def validate_id(value: object, what: str = "run id") -> str:
    """Return `value` if it is a safe identifier, else raise `InvalidIdentifier` saying why."""
    if not isinstance(value, str):
        raise InvalidIdentifier(f"{what} must be a string, got {type(value).__name__}")
    if value == "":
        raise InvalidIdentifier(f"{what} is empty")
    if ".." in value:
        raise InvalidIdentifier(f"{what} {value!r} contains '..'")
    if "/" in value or "\\" in value:
        raise InvalidIdentifier(f"{what} {value!r} contains a path separator")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidIdentifier(f"{what} {value!r} contains a control character")
    if not _ID.match(value):
        raise InvalidIdentifier(
            f"{what} {value!r} is not allowed: use 1-128 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return value


def is_safe_id(value: object, what: str = "id") -> bool:
    """Whether `value` passes `validate_id` (for vectorised checks over distinct values)."""
    try:
        validate_id(value, what)
        return True
    except InvalidIdentifier:
        return False
