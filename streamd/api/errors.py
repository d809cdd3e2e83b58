"""Error bodies and their OpenAPI documentation, shared by every router.

Every error is `{"detail": "..."}` saying what to fix, except 422 (a parameter or body field
breaks its declared constraint), whose `detail` lists each field as FastAPI does, with the field
named in `msg` and without the rejected input: the input may hold a secret, or a NaN that JSON
cannot carry.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from streamd.events.db import DatabaseError

_DESCRIPTIONS = {
    400: "The request is well-formed but cannot be carried out (the detail says why)",
    401: "Missing or wrong bearer token (only when api.token is set)",
    404: "No such object",
    409: "Conflicts with the current state",
    413: "Request body too large",
    415: "Unsupported Content-Type",
    503: "Temporarily unavailable: the database is unreachable, or the feature is disabled",
}


class ErrorBody(BaseModel):
    detail: str = Field(description="What is wrong, in words.")


def responses(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the given error statuses; 401 is added to each (token auth)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in sorted({401, *codes}):
        text = descriptions.get(f"e{code}", _DESCRIPTIONS[code])
        out[code] = {"model": ErrorBody, "description": text}
    return out


def _field(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


async def validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [
        {
            "loc": list(err["loc"]),
            "msg": f"{_field(tuple(err['loc']))}: {err['msg']}",
            "type": err["type"],
        }
        for err in exc.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=422)


# How long a client should wait before asking again while the database is unreachable.
RETRY_AFTER_S = 5


async def database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    # DatabaseError messages hide the password already (safe_url); anything else is named by
    # its type only, as its text may not.
    reason = str(exc) if isinstance(exc, DatabaseError) else type(exc).__name__
    return JSONResponse(
        {"detail": f"database unavailable: {reason}"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(DatabaseError, database_unavailable)
