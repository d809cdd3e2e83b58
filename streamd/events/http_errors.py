"""HTTP answer for a database that cannot be reached: 503 with the reason, never a 500.

The API registers it with `app.add_exception_handler(DatabaseError, database_unavailable)`. The
reason names the database with its password masked (`DatabaseError` messages always do).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from streamd.events.db import DatabaseError

RETRY_AFTER_S = 5


async def database_unavailable(request: Request, exc: Exception) -> Response:
    del request
    reason = str(exc) if isinstance(exc, DatabaseError) else type(exc).__name__
    return JSONResponse(
        {"detail": f"database unavailable: {reason}"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
