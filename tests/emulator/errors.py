"""
Kubernetes API errors rendered as ``Status`` objects, with the apiserver's messages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from tandem.api.admission import Rejected
from tandem.api.admission.causes import Cause
from tandem.api.admission.schema import format_invalid_message


class ApiError(Exception):
    """An error that renders as a Kubernetes ``Status`` (kind: Status, status: Failure)."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(name: str | None, group: str, kind: str, causes: Sequence[Cause] = ()) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    details["group"] = group
    details["kind"] = kind
    if causes:
        details["causes"] = [cause.as_dict() for cause in causes]
    return details


def not_found(group: str, plural: str, name: str) -> ApiError:
    qualified = f"{plural}.{group}" if group else plural
    return ApiError(404, "NotFound", f'{qualified} "{name}" not found', _details(name, group, plural))


def endpoint_not_found(path: str = "") -> ApiError:
    return ApiError(
        404,
        "NotFound",
        "the server could not find the requested resource",
        {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]}
        if not path
        else None,
    )


def already_exists(group: str, plural: str, name: str) -> ApiError:
    qualified = f"{plural}.{group}" if group else plural
    return ApiError(
        409, "AlreadyExists", f'{qualified} "{name}" already exists', _details(name, group, plural)
    )


def conflict(group: str, plural: str, name: str, detail: str | None = None) -> ApiError:
    qualified = f"{plural}.{group}" if group else plural
    detail = (
        detail
        or "the object has been modified; please apply your changes to the latest version and try again"
    )
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified} "{name}": {detail}',
        _details(name, group, plural),
    )


def invalid(kind: str, group: str, name: str, causes: Sequence[Cause]) -> ApiError:
    return ApiError(
        422,
        "Invalid",
        format_invalid_message(kind, group, name, list(causes)),
        _details(name, group, kind, causes),
    )


@contextlib.contextmanager
def rejections() -> Iterator[None]:
    """Admission's refusals (tandem.api.admission.Rejected) as the Status errors they are."""
    try:
        yield
    except Rejected as e:
        details = _details(e.name, e.group, e.kind, e.causes) if e.kind else None
        raise ApiError(e.code, e.reason, e.message, details) from e


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden(message: str, name: str = "", group: str = "", kind: str = "") -> ApiError:
    return ApiError(403, "Forbidden", message, _details(name, group, kind) if kind else None)


def request_entity_too_large(limit: int) -> ApiError:
    return ApiError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {limit}")


def method_not_allowed() -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {}
    )


def unsupported_media_type(content_type: str, accepted: Sequence[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{', '.join(accepted)}",
        {},
    )


def expired(requested: int, oldest: int) -> ApiError:
    return ApiError(410, "Expired", f"too old resource version: {requested} ({oldest})")
