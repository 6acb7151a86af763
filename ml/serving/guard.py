"""The ASGI guard in front of the scoring API: bearer-token auth, then body size and content
type, checked before FastAPI parses anything.

Refusals are `{"error": message}`: 400 (a header that decides the request's meaning sent twice),
401 (missing or wrong bearer token, when serving.token_env is set; /health is never
authenticated), 413 (body over serving.max_body_bytes, counting the bytes actually streamed, not
only Content-Length), 415 (not application/json on a JSON path, a charset other than UTF-8, or
a Content-Encoding such as gzip).
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Callable
from typing import Any

from ml.config import Settings
from ml.errors import ConfigError


def api_token(settings: Settings) -> str | None:
    """The bearer token every endpoint but /health requires, or None when auth is off."""
    name = settings.serving.token_env
    if not name:
        return None
    token = os.environ.get(name, "").strip()
    if not token:
        raise ConfigError(
            f"serving.token_env is {name} but ${name} is empty or unset: export the API token "
            "there, or unset serving.token_env to serve without auth"
        )
    return token


class Guard:
    """Auth, then body size and content type, before FastAPI parses anything. The body is read
    here (counting the bytes actually streamed, not only Content-Length) and replayed."""

    def __init__(self, app: Any, token: str | None, max_body_bytes: int, json_paths: set[str]):
        self.app = app
        self.token = token.encode() if token else None
        self.limit = max_body_bytes
        self.json_paths = json_paths

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if len(headers) != len(scope["headers"]) and (twice := _repeated(scope["headers"])):
            # which copy counts would differ between this guard and FastAPI: neither
            return await _error(send, 400, f"header {twice} given more than once")
        if self.token is not None and scope["path"] != "/health":
            scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
                return await _error(
                    send,
                    401,
                    "missing or wrong bearer token",
                    [(b"www-authenticate", b'Bearer realm="ml"')],
                )
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await _error(send, 413, f"request body over {self.limit} bytes")
        if scope["path"] in self.json_paths and (problem := _not_json(headers)):
            return await _error(send, 415, problem)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await _error(send, 413, f"request body over {self.limit} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


# Headers whose value decides what the request means: each may be sent once.
_SINGLE = (b"authorization", b"content-type", b"content-length", b"content-encoding")


def _repeated(headers: list[tuple[bytes, bytes]]) -> str | None:
    seen: set[bytes] = set()
    for name, _ in headers:
        if name in _SINGLE:
            if name in seen:
                return name.decode()
            seen.add(name)
    return None


def _not_json(headers: dict[bytes, bytes]) -> str | None:
    """Why the body is not UTF-8 JSON as sent, or None."""
    media, *params = headers.get(b"content-type", b"").split(b";")
    media = media.strip().lower()
    if media != b"application/json" and not media.endswith(b"+json"):
        return "expected Content-Type: application/json"
    for param in params:
        name, _, value = param.partition(b"=")
        charset = value.strip().strip(b'"').lower()
        if name.strip().lower() == b"charset" and charset not in (b"utf-8", b"utf8"):
            shown = charset.decode("latin-1")[:40]
            return f"expected UTF-8 JSON, not charset={shown}"
    encoding = headers.get(b"content-encoding", b"identity").strip().lower()
    if encoding not in (b"", b"identity"):
        shown = encoding.decode("latin-1")[:40]
        return f"Content-Encoding {shown} is not accepted: send the JSON uncompressed"
    return None


async def _error(
    send: Callable, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
