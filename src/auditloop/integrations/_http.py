"""What the ASGI and WSGI middlewares share: options, ids, client IPs, events.

Everything here is protocol-neutral: the middlewares extract the peer
address and headers from their own request shapes and hand over strings.
"""

from __future__ import annotations

import ipaddress
import re
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Final

from auditloop._auditor import Auditor
from auditloop._config import get_auditor
from auditloop._event import actor_dict
from auditloop.exceptions import ConfigurationError

__all__ = ["HttpOptions", "describe_error", "status_outcome"]

# A request id from the client is echoed into our responses and logs: accept
# only short ids of safe characters, or generate a fresh one.
_SAFE_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
_HEADER_NAME: Final = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_METHOD: Final = re.compile(r"[A-Z]+|\*")
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def status_outcome(status: int | None) -> str:
    """Map an HTTP status to an event outcome.

    Below 400 is ``success``, 401 and 403 are ``denied``, other statuses from
    400 up are ``failure``; no status at all (no response) is ``unknown``.
    """
    if status is None:
        return "unknown"
    if status < 400:
        return "success"
    return "denied" if status in (401, 403) else "failure"


def describe_error(exc: BaseException) -> str:
    """Return ``Type: message`` for an exception, never raising."""
    try:
        return f"{type(exc).__name__}: {exc}"[:300]
    except Exception:
        return type(exc).__name__


def _glob_regex(glob: str) -> str:
    return ".*".join(re.escape(part) for part in glob.split("*"))


class HttpOptions:
    """A middleware's validated options and the request logic built from them.

    Immutable after construction; safe to share between concurrent requests.

    Raises:
        ConfigurationError: naming the invalid option.
    """

    __slots__ = (
        "audit_requests",
        "auditor",
        "header",
        "networks",
        "owner",
        "resolver",
    )

    def __init__(
        self,
        owner: str,
        *,
        request_id_header: str,
        trusted_proxies: Iterable[str],
        actor: Callable[[Any], Any] | None,
        audit_requests: Iterable[str],
        auditor: Auditor | None,
    ) -> None:
        self.owner = owner
        if not isinstance(request_id_header, str) or not _HEADER_NAME.fullmatch(
            request_id_header
        ):
            raise ConfigurationError(
                f"{owner}: request_id_header must be an HTTP header name, "
                f"got {request_id_header!r}"
            )
        self.header = request_id_header
        self.networks = self._check_proxies(trusted_proxies)
        if actor is not None and not callable(actor):
            raise ConfigurationError(
                f"{owner}: actor must be a callable resolving the actor, got {actor!r}"
            )
        self.resolver = actor
        self.audit_requests = self._check_audit_requests(audit_requests)
        if auditor is not None and not isinstance(auditor, Auditor):
            raise ConfigurationError(
                f"{owner}: auditor must be an auditloop.Auditor, got {auditor!r}"
            )
        self.auditor = auditor

    def _check_proxies(self, proxies: Iterable[str]) -> tuple[_Network, ...]:
        if isinstance(proxies, str) or not isinstance(proxies, Iterable):
            raise ConfigurationError(
                f"{self.owner}: trusted_proxies must be a list of addresses or "
                f"networks, got {proxies!r}"
            )
        networks: list[_Network] = []
        for proxy in proxies:
            try:
                networks.append(ipaddress.ip_network(proxy, strict=False))
            except (TypeError, ValueError):
                raise ConfigurationError(
                    f"{self.owner}: trusted_proxies has {proxy!r}, which is not "
                    "an IP address or network"
                ) from None
        return tuple(networks)

    def _check_audit_requests(self, patterns: Iterable[str]) -> re.Pattern[str] | None:
        if isinstance(patterns, str) or not isinstance(patterns, Iterable):
            raise ConfigurationError(
                f"{self.owner}: audit_requests must be a list of patterns such as "
                f'"POST /admin/*", got {patterns!r}'
            )
        alternatives = []
        for pattern in patterns:
            method, path = self._parse_pattern(pattern)
            method_re = "[^ ]*" if method == "*" else re.escape(method)
            alternatives.append(f"{method_re} {_glob_regex(path)}")
        if not alternatives:
            return None
        return re.compile("|".join(f"(?:{alt})" for alt in alternatives), re.DOTALL)

    def _parse_pattern(self, pattern: object) -> tuple[str, str]:
        if isinstance(pattern, str):
            method, _, path = pattern.strip().partition(" ")
            path = path.strip()
            if method.startswith("/"):
                method, path = "*", method
            elif not path:
                path = "*"
            if _METHOD.fullmatch(method) and (path == "*" or path.startswith("/")):
                return method, path
        raise ConfigurationError(
            f"{self.owner}: audit_requests has {pattern!r}; write METHOD, /PATH "
            'or METHOD /PATH, with * as a wildcard ("POST /admin/*")'
        )

    # -- per request -----------------------------------------------------------

    def should_record(self, method: str, path: str) -> bool:
        """Return True when the request gets an ``http.request`` event."""
        matcher = self.audit_requests
        return matcher is not None and matcher.fullmatch(f"{method} {path}") is not None

    @staticmethod
    def request_id(received: str | None) -> str:
        """Return the client's request id if it is safe, else a fresh one."""
        if received is not None and _SAFE_REQUEST_ID.fullmatch(received):
            return received
        return uuid.uuid4().hex

    def _trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in self.networks)

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """Return the client's address.

        ``X-Forwarded-For`` is read only when the direct peer is a trusted
        proxy, from the right: each trusted hop is skipped and the first
        untrusted address is the client (one that is not an address at all
        stops the walk at the last trusted hop). When every hop is trusted,
        the leftmost one is the client.
        """
        if peer is None or not forwarded_for or not self.networks:
            return peer
        try:
            if not self._trusted(ipaddress.ip_address(peer)):
                return peer
        except ValueError:  # a unix socket path or other non-IP peer
            return peer
        client = peer
        for hop in reversed(forwarded_for.split(",")):
            try:
                address = ipaddress.ip_address(hop.strip())
            except ValueError:
                break
            client = str(address)
            if not self._trusted(address):
                break
        return client

    def resolved_fields(self, resolved: object, ip: str | None) -> dict[str, Any]:
        """Return the fields to bind for a request with this actor and IP."""
        actor = actor_dict(resolved) or {"id": "anonymous", "type": "anonymous"}
        if ip is not None and "ip" not in actor:
            actor["ip"] = ip
        return {"actor": actor}

    def failed_resolution(self, exc: Exception, ip: str | None) -> dict[str, Any]:
        """Return the fields to bind when the actor resolver raised."""
        actor: dict[str, Any] = {"id": "unknown", "type": "unknown"}
        if ip is not None:
            actor["ip"] = ip
        return {"actor": actor, "actor_error": describe_error(exc)}

    def record_request(
        self,
        method: str,
        path: str,
        *,
        route: str | None,
        status: int | None,
        start: float,
        error: BaseException | None,
    ) -> None:
        """Emit the ``http.request`` event; call it inside the request's scope.

        Never raises, except ``AuditError`` from a fail-closed sink.
        """
        attributes: dict[str, Any] = {"method": method, "route": route or path}
        if status is not None:
            attributes["status"] = status
        auditor = self.auditor or get_auditor()
        if error is None:
            outcome = status_outcome(status)
        else:
            outcome = "denied" if isinstance(error, auditor.denied) else "failure"
        auditor.emit_from(
            None,
            "http.request",
            actor=None,
            target={"id": path, "type": "path"},
            outcome=outcome,
            category=None,
            severity=None,
            reason=None,
            error=error,
            duration_ms=(time.perf_counter() - start) * 1000.0,
            attributes=attributes,
        )
