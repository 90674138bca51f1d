"""Signed webhooks: POST an alert as JSON, the way GitHub signs its hooks."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import time
import urllib.parse
from typing import Any, Final

from auditloop._clock import format_rfc3339
from auditloop.exceptions import ConfigurationError
from auditloop.rules._alert import Alert
from auditloop.rules._match import to_json

__all__ = ["SIGNATURE_HEADER", "Webhook", "sign", "webhook"]

SIGNATURE_HEADER: Final = "X-Auditloop-Signature-256"
#: The payload format; bumped on incompatible changes.
PAYLOAD_SCHEMA: Final = "auditloop.alert/1"
_RETRY_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})


def sign(body: bytes, secret: str | bytes) -> str:
    """Return the signature header value for *body*: ``sha256=<hex HMAC>``.

    Receivers recompute it over the raw request body with the shared secret
    and compare with :func:`hmac.compare_digest`.
    """
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


class Webhook:
    """An alert action that POSTs the alert to *url*; see :func:`webhook`."""

    def __init__(
        self,
        url: str,
        *,
        secret: str | bytes,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        headers: dict[str, str] | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigurationError(
                f"webhook: url must be an http(s) URL, got {url!r}"
            )
        try:
            port = parts.port  # urlsplit checks the port only when asked
        except ValueError as exc:
            raise ConfigurationError(f"webhook: url: {exc}, got {url!r}") from None
        if port == 0:
            raise ConfigurationError(f"webhook: url: port 0 is not valid, got {url!r}")
        if not isinstance(secret, str | bytes) or not secret:
            raise ConfigurationError(
                "webhook: secret must be a non-empty string or bytes"
            )
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or timeout <= 0
        ):
            raise ConfigurationError(
                f"webhook: timeout must be a positive number, got {timeout!r}"
            )
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigurationError(
                f"webhook: retries must be an integer >= 0, got {retries!r}"
            )
        if (
            isinstance(backoff, bool)
            or not isinstance(backoff, int | float)
            or backoff < 0
        ):
            raise ConfigurationError(
                f"webhook: backoff must be a number >= 0, got {backoff!r}"
            )
        self.url = url
        self._parts = parts
        self._secret = secret
        self.timeout = float(timeout)
        self.retries = retries
        self.backoff = float(backoff)
        self.headers = dict(headers or {})

    def payload(self, alert: Alert) -> bytes:
        """Return the JSON body for *alert*, stamped with the current time."""
        body: dict[str, Any] = {
            "schema": PAYLOAD_SCHEMA,
            "id": alert.id,
            "sent_at": format_rfc3339(time.time_ns()),
            "alert": alert.to_dict(),
        }
        return to_json(body)  # also a group value beyond 64 bits

    def __call__(self, alert: Alert) -> None:
        """POST *alert*; retry connection errors, 408, 429 and 5xx.

        Blocks (it runs on the rule dispatcher thread, never in the audited
        call) for at most ``(retries + 1)`` timeouts plus the backoff.

        Raises:
            OSError: when the alert could not be delivered (the dispatcher
                counts it and emits ``auditloop.rule.error``).
        """
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            body = self.payload(alert)  # a fresh sent_at on every attempt
            try:
                status = self._post(body)
            except (OSError, http.client.HTTPException) as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if 200 <= status < 300:
                return
            problem = f"HTTP {status}"
            if status not in _RETRY_STATUS:
                break
        raise OSError(f"webhook {self.url}: {problem} (after {attempt + 1} attempts)")

    def _post(self, body: bytes) -> int:
        parts = self._parts
        connection_class = (
            http.client.HTTPSConnection
            if parts.scheme == "https"
            else http.client.HTTPConnection
        )
        connection = connection_class(
            parts.hostname or "", parts.port, timeout=self.timeout
        )
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "auditloop",
            SIGNATURE_HEADER: sign(body, self._secret),
            **self.headers,
        }
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    def __repr__(self) -> str:
        return f"webhook({self.url!r})"


def webhook(
    url: str,
    *,
    secret: str | bytes,
    timeout: float = 5.0,
    retries: int = 3,
    backoff: float = 0.5,
    headers: dict[str, str] | None = None,
) -> Webhook:
    """An action that POSTs each alert as signed JSON to *url*.

    The body is ``{"schema": "auditloop.alert/1", "id": <alert id>,
    "sent_at": <RFC 3339>, "alert": {...}}``; the header
    ``X-Auditloop-Signature-256: sha256=<hex>`` is the HMAC-SHA256 of the raw
    body with *secret*. Receivers should verify it, reject stale
    ``sent_at`` values and de-duplicate on ``id``. Put the webhook in a
    rule's ``then`` (it also receives resolutions unless ``on_resolve`` is
    set otherwise).

    Args:
        url: ``http://`` or ``https://`` endpoint.
        secret: shared signing secret.
        timeout: seconds per attempt (connect and response).
        retries: extra attempts after connection errors, 408, 429 and 5xx.
        backoff: seconds before the first retry, doubled for each next one.
        headers: extra request headers.

    Raises:
        ConfigurationError: for a bad URL (also an invalid port), secret,
            timeout, retries or backoff.
    """
    return Webhook(
        url,
        secret=secret,
        timeout=timeout,
        retries=retries,
        backoff=backoff,
        headers=headers,
    )
