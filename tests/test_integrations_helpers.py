"""The integrations' shared helpers: client IPs, outcomes, callers, exc_info."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from auditloop.integrations._bridge import app_caller, error_from_exc_info
from auditloop.integrations._http import HttpOptions, describe_error, status_outcome


def options(*proxies: str) -> HttpOptions:
    return HttpOptions(
        "Test",
        request_id_header="X-Request-ID",
        trusted_proxies=proxies,
        actor=None,
        audit_requests=(),
        auditor=None,
    )


class TestClientIp:
    @pytest.mark.parametrize(
        ("proxies", "peer", "forwarded", "expected"),
        [
            # No trusted proxies: the header is never read.
            ((), "203.0.113.9", "6.6.6.6", "203.0.113.9"),
            # An untrusted peer cannot spoof its address.
            (("10.0.0.0/8",), "203.0.113.9", "6.6.6.6", "203.0.113.9"),
            # A trusted peer: the rightmost untrusted hop is the client.
            (("10.0.0.0/8",), "10.0.0.1", "1.1.1.1, 6.6.6.6, 10.0.0.2", "6.6.6.6"),
            # Every hop trusted: the leftmost one.
            (("10.0.0.0/8",), "10.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.3"),
            # Garbage stops the walk at the last trusted hop.
            (("10.0.0.0/8",), "10.0.0.1", "6.6.6.6, unknown, 10.0.0.2", "10.0.0.2"),
            (("10.0.0.0/8",), "10.0.0.1", "unknown", "10.0.0.1"),
            # IPv6, and single addresses as proxies.
            (("::1",), "::1", "2001:db8::7", "2001:db8::7"),
            # A non-IP peer (unix socket) or none at all.
            (("10.0.0.0/8",), "/run/app.sock", "6.6.6.6", "/run/app.sock"),
            (("10.0.0.0/8",), None, "6.6.6.6", None),
            (("10.0.0.0/8",), "10.0.0.1", None, "10.0.0.1"),
        ],
    )
    def test_forwarded_for_rules(
        self,
        proxies: tuple[str, ...],
        peer: str | None,
        forwarded: str | None,
        expected: str | None,
    ) -> None:
        assert expected == options(*proxies).client_ip(peer, forwarded)


class TestResolvedFields:
    def test_no_ip_no_actor(self) -> None:
        assert {"actor": {"id": "anonymous", "type": "anonymous"}} == (
            options().resolved_fields(None, None)
        )

    def test_resolver_ip_wins(self) -> None:
        fields = options().resolved_fields({"id": "a", "ip": "1.2.3.4"}, "5.6.7.8")

        assert "1.2.3.4" == fields["actor"]["ip"]

    def test_failed_resolution_without_ip(self) -> None:
        fields = options().failed_resolution(ValueError("x"), None)

        assert ({"id": "unknown", "type": "unknown"}, "ValueError: x") == (
            fields["actor"],
            fields["actor_error"],
        )


class TestStatusOutcome:
    @pytest.mark.parametrize(
        ("status", "expected"),
        [
            (None, "unknown"),
            (200, "success"),
            (302, "success"),
            (401, "denied"),
            (403, "denied"),
            (404, "failure"),
            (503, "failure"),
        ],
    )
    def test_mapping(self, status: int | None, expected: str) -> None:
        assert expected == status_outcome(status)


class TestDescribeError:
    def test_unprintable_exception(self) -> None:
        class Unprintable(Exception):
            def __str__(self) -> str:
                raise RuntimeError("no")

        assert "Unprintable" == describe_error(Unprintable())


class TestErrorFromExcInfo:
    def test_forms(self) -> None:
        error = ValueError("v")

        assert error is error_from_exc_info(error)
        assert error is error_from_exc_info((ValueError, error, None))
        assert error_from_exc_info((None, None, None)) is None
        assert error_from_exc_info(False) is None
        try:
            raise error
        except ValueError:
            assert error is error_from_exc_info(True)


class TestAppCaller:
    def test_skips_named_packages(self) -> None:
        def inner() -> str | None:
            return app_caller(("pytest",))

        assert f"{__name__}:TestAppCaller.test_skips_named_packages.<locals>.inner" == (
            inner()
        )

    def test_none_when_every_frame_is_skipped(self) -> None:
        # A thread's stack holds only the threading module's frames.
        found: list[Any] = []
        thread = threading.Thread(target=lambda: found.append(_top_caller()))
        thread.start()
        thread.join()

        assert [None] == found


def _top_caller() -> str | None:
    # Skips this module (by its first dotted part) and threading's frames.
    return app_caller(("threading", __name__.partition(".")[0]))
