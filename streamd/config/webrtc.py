"""The `webrtc:` section (ICE servers) and the WHEP source of a camera."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from streamd.config.base import StrictModel
from streamd.config.secrets import redact_url, unencoded_password_char


class IceServerConfig(StrictModel):
    urls: list[str] = Field(
        min_length=1,
        description="stun:/turn:/turns: URLs of one server, e.g. turn:turn.example.net:3478"
        "?transport=udp (aiortc uses the first STUN and the first TURN URL it can use).",
    )
    username: str | None = Field(None, description="TURN user name.")
    credential: SecretStr | None = Field(None, description="TURN password.")

    @field_validator("urls", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    @field_validator("urls")
    @classmethod
    def _uris(cls, v: list[str]) -> list[str]:
        from aiortc.rtcicetransport import parse_stun_turn_uri

        for uri in v:
            try:
                parse_stun_turn_uri(uri)
            except ValueError as exc:
                raise ValueError(f"invalid ICE server URL {uri!r}: {exc}") from None
        return v

    @model_validator(mode="after")
    def _turn_credentials(self) -> IceServerConfig:
        if any(u.startswith("turn") for u in self.urls) and (
            self.username is None or self.credential is None
        ):
            raise ValueError("a TURN server needs username and credential")
        return self


class WebRtcConfig(StrictModel):
    ice_servers: list[IceServerConfig] = Field(
        default_factory=list,
        description="STUN/TURN servers for WebRTC cameras (WHIP and WHEP). Empty (default): "
        "host candidates only, enough on a LAN; add STUN/TURN when peers are behind NAT.",
    )


class WhepConfig(StrictModel):
    whep: str = Field(description="WHEP endpoint URL (http:// or https://) to pull video from.")
    token: SecretStr | None = Field(
        None, description="Bearer token sent to the WHEP endpoint (use ${ENV_VAR})."
    )

    @field_validator("whep")
    @classmethod
    def _url(cls, v: str) -> str:
        if bad := unencoded_password_char(v):
            raise ValueError(_unencoded_message("whep URL", bad))
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            shown = redact_url(v) if "://" in v else "no scheme"
            raise ValueError(f"whep must be an http:// or https:// URL, got {shown!r}")
        return v


def _unencoded_message(what: str, char: str) -> str:
    code = {"#": "%23", "/": "%2F", "?": "%3F"}[char]
    return (
        f"the password in the {what} contains an unencoded {char!r}, which ends the host part "
        f"of a URL: percent-encode it ({char} → {code})"
    )
