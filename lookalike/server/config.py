"""How a server is configured, and which hosts and origins it answers to."""

from __future__ import annotations

import ipaddress
import string
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import Request

from lookalike.settings import Options


@dataclass
class ServerConfig:
    """A server: the library's options (workspace, flows, token, upload limit, batching, ...) and
    what is the server's alone."""

    options: Options = field(default_factory=Options)
    host: str = "127.0.0.1"
    read_only: bool = False  # no writes: the workspace lock stays free for `lookalike index`
    allowed_hosts: tuple[str, ...] = ()  # Host names answered besides loopback's (--allowed-host)
    # Where duplicates may be moved besides the indexed folders (--trash); None: <workspace>/trash.
    # Set when the server starts, never by a request: a request names a folder inside it or them.
    trash: Path | None = None
    watch: bool = False  # keep the index equal to the indexed folders (`serve --watch`)

    @property
    def workspace(self) -> Path:
        return self.options.workspace

    @property
    def token(self) -> str | None:
        return self.options.token or None

    @property
    def max_upload_mb(self) -> float:
        return self.options.max_upload_mb

    @property
    def loopback(self) -> bool:
        return self.host == "" or is_loopback_name(self.host)

    def host_allowed(self, name: str) -> bool:
        """May a request addressed to ``name`` (a Host header's name, port stripped) be answered?

        On loopback only loopback names, so a web page whose own name was rebound to 127.0.0.1 (DNS
        rebinding) cannot talk to this server; beyond loopback, only the --allowed-host names if any
        are given.
        """
        if name in {_normal_host(h) for h in self.allowed_hosts}:
            return True
        if self.loopback:
            return is_loopback_name(name)
        return not self.allowed_hosts

    @property
    def writes_enabled(self) -> bool:
        """Writes need a token beyond loopback; on loopback they are open unless a token is set."""
        return not self.read_only and (self.loopback or bool(self.token))


# --- hosts and origins ----------------------------------------------------------------------------


def _normal_host(name: str) -> str:
    """A host name as compared: lower case, no IPv6 brackets, no trailing dot."""
    name = name.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name.removesuffix(".")  # "localhost." is localhost, fully qualified


def is_loopback_name(name: str) -> bool:
    """``localhost``, ``*.localhost`` (RFC 6761 keeps them on this machine), 127.0.0.0/8 or ``::1``."""
    name = _normal_host(name)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# What a host name or an IP literal is made of; a Host header with anything else is refused.
_HOST_CHARS = frozenset(string.ascii_letters + string.digits + ".-_")
_IPV6_CHARS = frozenset(string.hexdigits + ":.")


def parse_host_header(value: str) -> tuple[str, int | None] | None:
    """(name, port) of a ``Host`` header such as ``[::1]:8000``; ``None`` if it is malformed."""
    value = value.strip()
    if value.startswith("["):  # an IPv6 literal: [::1] or [::1]:8000
        end = value.find("]")
        name, rest = (value[1:end], value[end + 1 :]) if end > 0 else ("", "")
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:]
    else:
        name, _, port = value.partition(":")
    allowed = _IPV6_CHARS if value.startswith("[") else _HOST_CHARS
    if not name or not set(name) <= allowed or (port and not (port.isascii() and port.isdigit())):
        return None
    return _normal_host(name), int(port) if port else None


def _origin_key(scheme: str, name: str, port: int | None) -> tuple[str, str, int]:
    scheme = scheme.lower()
    return scheme, _normal_host(name), port or (443 if scheme == "https" else 80)


def _parse_origin(value: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an ``Origin`` such as ``http://127.0.0.1:8000``; ``None`` for ``null`` or junk."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.username or parts.path:
        return None
    return _origin_key(parts.scheme, parts.hostname, port)


# Sec-Fetch-Site values a browser sends for the page's own requests ("none": typed, or a bookmark).
# "same-site" is refused too: a page on 127.0.0.1:OTHERPORT is same-site with this server.
SAME_ORIGIN_FETCH_SITES = frozenset({"same-origin", "none"})


def cross_site_reason(request: Request) -> str | None:
    """Why a browser request is cross-site (from Sec-Fetch-Site or Origin), or ``None``.

    Requests with neither header (curl, scripts) are not browsers' and pass; the token rules still apply.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in SAME_ORIGIN_FETCH_SITES:
        return f"Sec-Fetch-Site is {site!r}"
    origin = request.headers.get("origin")
    if origin is not None:
        host = parse_host_header(request.headers.get("host") or "")
        own = _origin_key(request.url.scheme, *host) if host else None
        if own is None or _parse_origin(origin) != own:
            return f"Origin {origin!r} is not this server's"
    return None
