"""HTTP API (FastAPI): one router per concern (events, rules, search, cameras, whip, web page,
metrics). The app gets the daemon's objects through its lifespan state (`request.state`), never
through module globals, so tests can build an app around any store."""

from streamd.api.app import create_app
from streamd.api.server import serve_api
from streamd.api.state import ApiState

__all__ = ["ApiState", "create_app", "serve_api"]
