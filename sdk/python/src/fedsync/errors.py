"""Errors the API answers with, carrying the contract's codes."""

from __future__ import annotations

from typing import Any

INVALID_ARGUMENT = "invalid_argument"
UNAUTHENTICATED = "unauthenticated"
PERMISSION_DENIED = "permission_denied"
NOT_FOUND = "not_found"
VERSION_CONFLICT = "version_conflict"
TOO_LARGE = "too_large"
RATE_LIMITED = "rate_limited"
UNAVAILABLE = "unavailable"
INTERNAL = "internal"
INVALID_CLIENT = "invalid_client"

_BY_STATUS = {
    400: INVALID_ARGUMENT,
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: NOT_FOUND,
    409: VERSION_CONFLICT,
    413: TOO_LARGE,
    429: RATE_LIMITED,
    503: UNAVAILABLE,
}


class FedsyncError(Exception):
    """An error response: ``code`` is the contract's code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str = "",
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}
        self.retry_after = retry_after

    @property
    def temporary(self) -> bool:
        """Worth sending again later: nothing was accepted."""
        return self.code in (RATE_LIMITED, UNAVAILABLE)


class VersionConflict(FedsyncError):
    """A strong write based on a version that is no longer current."""


class NotFound(FedsyncError):
    """No such document (or conflict)."""


class Unauthenticated(FedsyncError):
    """No valid token: bad credentials, an expired or revoked token."""


class PermissionDenied(FedsyncError):
    """The token's level or role does not allow it."""


_CLASSES: dict[str, type[FedsyncError]] = {
    VERSION_CONFLICT: VersionConflict,
    NOT_FOUND: NotFound,
    UNAUTHENTICATED: Unauthenticated,
    INVALID_CLIENT: Unauthenticated,
    PERMISSION_DENIED: PermissionDenied,
}


def from_response(status: int, body: Any, retry_after: str | None) -> FedsyncError:
    """Build the error of a non-2xx response."""
    ra: float | None = None
    if retry_after is not None:
        try:
            ra = float(retry_after)
        except ValueError:
            ra = None
    code, message, details = _BY_STATUS.get(status, INTERNAL), "", {}
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = str(err.get("code", code))
            message = str(err.get("message", ""))
            d = err.get("details")
            details = d if isinstance(d, dict) else {}
        elif isinstance(err, str):  # RFC 6749 5.2, from /oauth2/token
            code = err
    cls = _CLASSES.get(code, FedsyncError)
    return cls(status, code, message, details, ra)
