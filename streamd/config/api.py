"""The `api:` section."""

from __future__ import annotations

import ipaddress
import os

from pydantic import Field, SecretStr, field_validator, model_validator

from streamd.config.base import StrictModel


class ApiConfig(StrictModel):
    enabled: bool = Field(True, description="Serve the HTTP API.")
    listen: str = Field("127.0.0.1:8080", description="host:port the HTTP API binds.")
    token: SecretStr | None = Field(
        None, description="Bearer token required by the API; default from STREAMD_API_TOKEN."
    )
    require_token_off_loopback: bool = Field(
        False,
        description="Refuse to start when `listen` is not a loopback address and no token is "
        "set (default: start, with a warning in the log).",
    )
    public_url: str | None = Field(
        None,
        description="Base URL clients reach the API at (e.g. http://nvr.lan:8080), used for "
        "`snapshot_url` in MQTT payloads; default: http://<listen>, with a wildcard address "
        "replaced by 127.0.0.1.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser (CORS), e.g. "
        "https://dashboard.lan; default none. WHIP publishing allows any origin.",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"listen must be host:port, got {v!r}")
        return v

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        return v.rstrip("/") if v else v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def loopback_only(self) -> bool:
        """Whether `listen` binds loopback only (a wildcard or any other address does not)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name: whatever it resolves to, assume it is reachable

    @property
    def base_url(self) -> str:
        """Where clients reach the API: public_url, else derived from `listen` (a wildcard bind
        is reachable from elsewhere, so it gets this machine's host name, not an address that
        only works here)."""
        if self.public_url:
            return self.public_url
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            import socket

            host = socket.gethostname()
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def exposure_warning(self) -> str | None:
        """A warning when the API is reachable beyond this machine without a token."""
        if not self.enabled or self.loopback_only or self.token is not None:
            return None
        return (
            f"the HTTP API listens on {self.listen}, reachable beyond this machine, and no token "
            "is set: anyone who can reach it can read events and change rules. Set api.token (or "
            "STREAMD_API_TOKEN), listen on 127.0.0.1, or set api.require_token_off_loopback: "
            "true to refuse to start like this"
        )

    @model_validator(mode="after")
    def _token_from_env(self) -> ApiConfig:
        if self.token is None and os.environ.get("STREAMD_API_TOKEN"):
            object.__setattr__(self, "token", SecretStr(os.environ["STREAMD_API_TOKEN"]))
        off_loopback = self.enabled and not self.loopback_only
        if off_loopback and self.require_token_off_loopback and self.token is None:
            raise ValueError(
                f"listen {self.listen} is reachable beyond this machine but no token is set "
                "(set api.token or STREAMD_API_TOKEN, or listen on 127.0.0.1)"
            )
        return self
