"""Credentials: out of URLs before anything is written, and a key only to the host it belongs to.

A URL may carry a key (`http://user:KEY@host/v1`, `MODEL@http://:KEY@host/v1`). `split_credentials`
takes it out for the Authorization header; `redact` removes it from any text (manifests, rows, cards,
reports, error messages), so no written file or printed line holds it. `environment_key` hands a
provider's key from the environment only to that provider's own host: a custom `--api-base` gets a
key only when the user gives one for it (`--key`, the URL itself, or `INSTRUCTKIT_API_KEY`).
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

# scheme://userinfo@ : the userinfo (no "/", "@" or whitespace in it) is what goes.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/@\s\"'<>]+@")

# Environment variables that hold a provider's key, and the hosts that provider answers on.
ENVIRONMENT_KEYS = {"OPENAI_API_KEY": ("api.openai.com",)}


def redact(text: str) -> str:
    """`text` with every URL's user:password removed (`http://u:KEY@host` -> `http://host`)."""
    if "@" not in text or "://" not in text:
        return text
    return _USERINFO.sub(r"\1", text)


def redact_value(value: Any) -> Any:
    """A JSON-like value (dict keys, lists, strings) with every URL credential removed."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(k) if isinstance(k, str) else k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value


def split_credentials(url: str | None) -> tuple[str | None, str | None]:
    """(the URL without user:password, the key it carried or None): the password, else the user name."""
    if not url or "@" not in url:
        return url, None
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    key = parts.password if parts.password else parts.username
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)), unquote(key) if key else None


def environment_key(api_base: str | None) -> str | None:
    """The key from the environment for a server at `api_base`: `INSTRUCTKIT_API_KEY` (the user's key for
    the servers instructkit talks to), else a provider's variable only when `api_base` is that provider's
    own host (OPENAI_API_KEY goes to api.openai.com, never to a third party's server)."""
    if key := os.environ.get("INSTRUCTKIT_API_KEY"):
        return key
    host = (urlsplit(api_base).hostname or "").lower() if api_base else ""
    for variable, hosts in ENVIRONMENT_KEYS.items():
        if host in hosts and (key := os.environ.get(variable)):
            return key
    return None
