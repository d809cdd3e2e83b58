"""Secrets: masking them in URLs and text, and finding every secret a config holds.

Masking is done twice on purpose. URLs are masked where they are formatted (`redact_url`), and
every message and log line is scrubbed of the literal secret values a loaded config holds
(`SecretScrubber`), because a secret can reach a message in ways no URL parser foresees: a
camera password with an unencoded `#` ends up as a "port" in urllib's error, a malformed database
URL is echoed by its driver.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlsplit

MASK = "***"
# Query parameters that carry credentials in camera and WHEP URLs (…?token=…, …&password=…).
_SECRET_PARAM = re.compile(
    r"(?i)^(pass(word)?|pwd|token|access_token|key|api_?key|secret|sig|auth)$"
)
# Config keys whose string value is a secret wherever they appear.
SECRET_KEYS = frozenset({"password", "token", "credential", "secret"})
# Keys holding URLs, and the password of a URL whose scheme is missing ("u:pw@host/db").
_URL_KEYS = frozenset({"url", "whep", "urls"})
_BARE_USERINFO = re.compile(r"^[^:@\s]*:(.+)@[^@]*$")
# Shorter values would turn every message into noise; URLs still mask those in place.
_MIN_SCRUB_LEN = 3
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def split_userinfo(url: str) -> tuple[str, str | None, str | None, str]:
    """(scheme://, user, password, rest) of `url`, splitting the user info at the LAST '@'.

    urllib ends the authority at the first '/', '?' or '#', so a password holding one of them
    unencoded leaks into the host, port or path. Splitting at the last '@' instead errs towards
    treating too much as the password, which is the safe side for masking.
    """
    scheme, sep, after = url.partition("://")
    if not sep:
        return "", None, None, url
    at = after.rfind("@")
    if at < 0:
        return f"{scheme}://", None, None, after
    userinfo, rest = after[:at], after[at + 1 :]
    user, colon, password = userinfo.partition(":")
    if not colon and any(c in user for c in "/?#"):
        # "host/path?x=a@b": the '@' is in the path or query, not user info.
        return f"{scheme}://", None, None, after
    return f"{scheme}://", user, password if colon else None, rest


def redact_url(url: str) -> str:
    """The URL with its password and credential-like query parameters replaced, safe to log."""
    prefix, user, password, rest = split_userinfo(url)
    if password is not None:
        url = f"{prefix}{user}:{MASK}@{rest}"
    elif user is not None and not user:
        url = f"{prefix}{MASK}@{rest}"
    query = urlsplit(url).query if "?" in url else ""
    for name, value in parse_qsl(query, keep_blank_values=True):
        if value and _SECRET_PARAM.match(name):
            url = url.replace(f"{name}={value}", f"{name}={MASK}")
    return url


def redact_text(text: str) -> str:
    """`text` with every URL in it passed through redact_url."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def unencoded_password_char(url: str) -> str | None:
    """The first of '#', '/', '?' that a URL's password holds unencoded, else None.

    Such a URL means something else to every parser than the user meant (the password is cut
    short, the rest becomes host or path), so it is refused, never guessed at.
    """
    _, _, password, _ = split_userinfo(url)
    if password is None:
        return None
    return next((c for c in "#/?" if c in password), None)


def secrets_in(data: object) -> set[str]:
    """Every secret value in parsed config data: values of SECRET_KEYS and URL passwords."""
    found: set[str] = set()

    def walk(value: object, key: str | None) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v, key)
        elif isinstance(value, str):
            if key is not None and key.lower() in SECRET_KEYS:
                found.add(value)
            if key in _URL_KEYS and "://" not in value:
                # "user:password@host" with the scheme missing or mistyped
                found.update(m.group(1) for m in _BARE_USERINFO.finditer(value))
            for m in _URL_IN_TEXT.finditer(value):
                _, _, password, _ = split_userinfo(m.group(0))
                if password:
                    found.add(password)
                query = urlsplit(m.group(0)).query if "?" in m.group(0) else ""
                found.update(
                    v
                    for n, v in parse_qsl(query, keep_blank_values=True)
                    if v and _SECRET_PARAM.match(n)
                )

    walk(data, None)
    return {s for s in found if len(s) >= _MIN_SCRUB_LEN}


class SecretScrubber:
    """Replaces known secret values (and URL passwords) in text. Longest secrets first, so a
    secret that contains another is masked whole."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        merged = set(self._secrets) | {s for s in secrets if len(s) >= _MIN_SCRUB_LEN}
        self._secrets = sorted(merged, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        text = redact_text(text)
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text
