"""The detector's model file: a configured local path, or a download verified by checksum and
cached, so that a model is never run unverified and a partial download is never mistaken for
one."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Final

from streamd.errors import ModelError

__all__ = ["OFFICIAL_YOLOX_NANO_URL", "YOLOX_NANO_SHA256", "resolve_model"]

_log = logging.getLogger(__name__)

OFFICIAL_YOLOX_NANO_URL: Final = (
    "https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/yolox_nano.onnx"
)
# sha256 of the yolox_nano.onnx used for development and tests (shared/models/yolox_nano.onnx).
# That copy is believed to be the file published at OFFICIAL_YOLOX_NANO_URL but could not be
# compared with it here (no network): if the release file differs, a download fails this check
# loudly instead of silently running an unknown model.
YOLOX_NANO_SHA256: Final = "e8af074932d4ed7e232278e3055cefcdea3edf178874a3694ae292649fb464dd"

_DOWNLOAD_TIMEOUT_S: Final = 30.0
_CHUNK: Final = 1 << 16


def _sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _verify(path: Path, expected: str) -> None:
    actual = _sha256_of(path)
    if actual != expected.strip().lower():
        raise ModelError(
            f"model file {path} failed its checksum: expected sha256 {expected.strip().lower()}, "
            f"got {actual}"
        )


def _download(url: str, sha256: str | None, target: Path) -> Path | None:
    """Fetch `url` to `target` via a temp file in the same directory, so `target` only ever
    appears complete and verified (os.replace is atomic within one filesystem)."""
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".part", dir=target.parent
        )
    except OSError as exc:
        raise ModelError(f"cannot write to model cache directory {target.parent}: {exc}") from exc
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        try:
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp,
            ):
                while chunk := resp.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            # URLError covers HTTP errors and refused/unresolvable hosts, OSError timeouts and
            # resets mid-body, ValueError a malformed URL. All mean "no model this time"; the
            # caller decides whether running without a detector is acceptable and says so.
            _log.info("model download from %s failed: %s", url, exc)
            return None
        if sha256 is not None and digest.hexdigest() != sha256.strip().lower():
            raise ModelError(
                f"model downloaded from {url} failed its checksum: expected sha256 "
                f"{sha256.strip().lower()}, got {digest.hexdigest()}"
            )
        os.replace(tmp, target)
        return target
    finally:
        # After a successful replace the temp name no longer exists; otherwise this removes the
        # partial or rejected download so it can never be mistaken for a model.
        tmp.unlink(missing_ok=True)


def resolve_model(
    path: Path | None, url: str | None, sha256: str | None, cache_dir: Path
) -> Path | None:
    """Find a usable model file: `path` if it exists, else a verified download of `url`.

    A local file that fails `sha256` raises ModelError rather than falling back to the
    download: a configured file that is wrong is a mistake the user must see, not paper over.
    Returns None when there is no file and the download fails (e.g. offline); the caller logs.
    """
    if path is not None and path.is_file():
        if sha256 is not None:
            _verify(path, sha256)
        return path
    if url is None:
        return None

    name = Path(urllib.parse.urlsplit(url).path).name or "model.onnx"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create model cache directory {cache_dir}: {exc}") from exc
    target = cache_dir / name
    if target.is_file():
        # Only verified files are ever renamed into the cache, so a mismatch here means the
        # configured checksum changed (a new model version): fetch again rather than fail.
        if sha256 is None or _sha256_of(target) == sha256.strip().lower():
            return target
        _log.info("cached model %s does not match the configured sha256; re-downloading", target)
    return _download(url, sha256, target)
