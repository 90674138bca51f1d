"""Redaction: secrets under any key, at any depth, are replaced by default."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import auditloop
from auditloop import ConfigurationError, sinks
from auditloop._encode import encode
from auditloop.processors import DEFAULT_REDACT_KEYS, REDACTED, Redactor


def emitted(auditor: auditloop.Auditor, memory: sinks.MemorySink) -> dict[str, Any]:
    record: dict[str, Any] = orjson.loads(memory.lines[-1])
    return record


@pytest.fixture
def memory() -> sinks.MemorySink:
    sink = sinks.MemorySink()
    auditloop.configure(sinks=[sink])
    return sink


@dataclasses.dataclass
class Credentials:
    user: str
    password: str


@attrs.define
class ApiClient:
    url: str
    api_key: str


@dataclasses.dataclass
class BrokenCredentials:
    password: str

    def __getattribute__(self, name: str) -> Any:
        if name == "password":
            raise RuntimeError("no password for you")
        return object.__getattribute__(self, name)

    def __repr__(self) -> str:
        return "BrokenCredentials(...)"


class UnlistableMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("cannot list")

    def __len__(self) -> int:
        return 1


class ListKeyMapping(Mapping[Any, Any]):
    """A Mapping whose keys are unhashable lists."""

    def __getitem__(self, key: Any) -> Any:
        return "v"

    def __iter__(self) -> Iterator[Any]:
        return iter([["token"], ["plain"]])

    def __len__(self) -> int:
        return 2

    def items(self) -> Any:
        return [(["password"], "p"), (["plain"], "v")]


class BadKey:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        return "BadKey()"


class TestDefaultRedaction:
    @pytest.mark.parametrize(
        "key",
        [
            "password",
            "Password",
            "PASSWD",
            "secret",
            "token",
            "api_key",
            "apikey",
            "X-Api-Key",
            "access_key",
            "authorization",
            "Authorization",
            "cookie",
            "Set-Cookie",
            "session",
            "private_key",
            "client_secret",
            "credit_card",
            "card_number",
            "_password",
            "x_token",
            "db_password",
            "github_token",
            "X-Auth-Token",
        ],
    )
    def test_secret_keys(self, memory: sinks.MemorySink, key: str) -> None:
        attributes: dict[str, Any] = {key: "s3cr3t", "plain": "visible"}
        auditloop.emit("x", **attributes)

        assert {key: REDACTED, "plain": "visible"} == memory.events[0].attributes
        assert b"s3cr3t" not in memory.lines[0]

    @pytest.mark.parametrize(
        "key", ["token_count", "user", "passwords_changed", "sessions_total", "id"]
    )
    def test_ordinary_keys_are_kept(self, memory: sinks.MemorySink, key: str) -> None:
        attributes: dict[str, Any] = {key: "value"}
        auditloop.emit("x", **attributes)

        assert {key: "value"} == memory.events[0].attributes

    def test_secrets_under_nested_keys(self, memory: sinks.MemorySink) -> None:
        auditloop.emit(
            "user.update",
            request={
                "headers": {"Authorization": "Bearer abc", "Accept": "json"},
                "body": [{"user": "bob", "password": "hunter2"}, ("Cookie", 1)],
                "deep": {"a": {"b": {"c": {"client_secret": "xyz", "n": 1}}}},
            },
        )

        assert {
            "request": {
                "headers": {"Authorization": REDACTED, "Accept": "json"},
                "body": [{"user": "bob", "password": REDACTED}, ["Cookie", 1]],
                "deep": {"a": {"b": {"c": {"client_secret": REDACTED, "n": 1}}}},
            }
        } == memory.events[0].attributes
        for secret in (b"abc", b"hunter2", b"xyz"):
            assert secret not in memory.lines[0]

    def test_whole_subtree_under_a_secret_key(self, memory: sinks.MemorySink) -> None:
        auditloop.emit("x", session={"id": "s1", "data": [1, 2]})

        assert {"session": REDACTED} == memory.events[0].attributes

    def test_dataclass_and_attrs_instances_are_walked(
        self, memory: sinks.MemorySink
    ) -> None:
        auditloop.emit(
            "login",
            creds=Credentials("bob", "hunter2"),
            clients=[ApiClient("https://x", "k-123")],
        )

        assert {
            "creds": {"user": "bob", "password": REDACTED},
            "clients": [{"url": "https://x", "api_key": REDACTED}],
        } == memory.events[0].attributes
        assert b"hunter2" not in memory.lines[0]
        assert b"k-123" not in memory.lines[0]

    def test_the_callers_objects_are_not_mutated(
        self, memory: sinks.MemorySink
    ) -> None:
        payload = {"password": "p", "nested": {"token": "t"}, "list": [{"secret": 1}]}
        snapshot = orjson.dumps(payload)

        auditloop.emit("x", payload=payload)

        assert snapshot == orjson.dumps(payload)

    def test_context_from_bind_is_redacted(self, memory: sinks.MemorySink) -> None:
        with auditloop.bind(actor="a", authorization="Basic Zm9v", request_id="r"):
            auditloop.emit("x")

        assert {"authorization": REDACTED, "request_id": "r"} == (
            memory.events[0].context
        )

    def test_redaction_can_be_turned_off(self) -> None:
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory], redact=False)

        auditloop.emit("x", password="plain")

        assert {"password": "plain"} == memory.events[0].attributes


class TestCustomKeys:
    def test_extend_the_default_list(self) -> None:
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory], redact=Redactor(extra_keys=["SSN", "pin"]))

        auditloop.emit("x", ssn="123", user_pin="0000", password="p", name="n")

        assert {
            "ssn": REDACTED,
            "user_pin": REDACTED,
            "password": REDACTED,
            "name": "n",
        } == memory.events[0].attributes

    def test_replace_the_default_list(self) -> None:
        memory = sinks.MemorySink()
        auditloop.configure(sinks=[memory], redact=Redactor(keys=["ssn"], marker="***"))

        auditloop.emit("x", ssn="123", password="p")

        assert {"ssn": "***", "password": "p"} == memory.events[0].attributes

    def test_an_empty_list_redacts_nothing(self) -> None:
        redactor = Redactor(keys=[])

        assert {"password": "p"} == redactor.redact({"password": "p"})

    def test_default_key_list(self) -> None:
        assert {
            "password",
            "passwd",
            "secret",
            "token",
            "api_key",
            "apikey",
            "access_key",
            "authorization",
            "cookie",
            "set_cookie",
            "session",
            "private_key",
            "client_secret",
            "credit_card",
            "card_number",
        } <= DEFAULT_REDACT_KEYS

    @pytest.mark.parametrize("kwargs", [{"keys": "password"}, {"extra_keys": "pin"}])
    def test_a_plain_string_is_refused(self, kwargs: dict[str, Any]) -> None:
        with pytest.raises(ConfigurationError, match="keys"):
            Redactor(**kwargs)

    def test_bad_redact_option(self) -> None:
        with pytest.raises(ConfigurationError, match="redact"):
            auditloop.configure(redact="yes")  # type: ignore[arg-type]


class TestRedactorEdges:
    def test_cycles_end_at_their_first_repetition(self) -> None:
        loop: dict[str, Any] = {"token": "t", "name": "n"}
        loop["self"] = loop
        loop["again"] = loop
        items: list[Any] = [1]
        items.append(items)

        assert {
            "token": REDACTED,
            "name": "n",
            "self": "<cyclic>",
            "again": "<cyclic>",
        } == Redactor().redact(loop)
        assert [1, "<cyclic>"] == Redactor().redact(items)

    def test_shared_non_cyclic_values_are_kept(self) -> None:
        shared = {"k": "v"}

        assert {"a": shared, "b": [shared, shared]} == Redactor().redact(
            {"a": shared, "b": [shared, shared]}
        )

    def test_nesting_is_cut_at_64_levels(self) -> None:
        deep: Any = "bottom"
        for _ in range(100):
            deep = {"d": deep}

        result = Redactor().redact(deep)

        for _ in range(64):
            result = result["d"]
        assert result.startswith("<too deep")

    def test_deep_lists_are_cut_too(self) -> None:
        deep: Any = ["bottom"]
        for _ in range(100):
            deep = [deep]

        result = Redactor().redact(deep)

        for _ in range(64):
            result = result[0]
        assert result.startswith("<too deep")

    def test_a_mapping_that_cannot_be_listed_is_hidden(self) -> None:
        assert {"m": REDACTED} == Redactor().redact({"m": UnlistableMapping()})

    def test_unhashable_keys_never_leak_nor_raise(self) -> None:
        redacted = Redactor().redact({"m": ListKeyMapping()})

        assert b'"p"' not in encode(redacted)

    def test_unprintable_keys_never_raise(self) -> None:
        redacted = Redactor().redact({"outer": {BadKey(): "kept"}, "n": 1})

        assert 1 == orjson.loads(encode(redacted))["n"]

    def test_a_broken_dataclass_never_leaks_nor_raises(self) -> None:
        redacted = Redactor().redact({"b": BrokenCredentials("hunter2")})

        assert b"hunter2" not in encode(redacted)

    def test_key_cache_is_bounded(self) -> None:
        redactor = Redactor()

        redactor.redact({f"k{i}": i for i in range(5000)})

        assert 4096 == len(redactor._cache)
        assert redactor.is_secret("not_cached_password")

    def test_context_cache_follows_the_bound_scope(
        self, memory: sinks.MemorySink
    ) -> None:
        with auditloop.bind(token="t1"):
            auditloop.emit("a")
        with auditloop.bind(other="o"):
            auditloop.emit("b")

        assert [{"token": REDACTED}, {"other": "o"}] == [
            e.context for e in memory.events
        ]


secret_keys = st.sampled_from(
    ["password", "Token", "X-Api-Key", "session", "db_password", "Set-Cookie"]
)
plain_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
SECRET = "SECRET-VALUE-DO-NOT-LEAK"


@st.composite
def nested_with_secrets(draw: st.DrawFn) -> Any:
    leaves = st.one_of(st.integers(), st.text(max_size=5), st.none())
    tree = draw(
        st.recursive(
            leaves,
            lambda inner: st.one_of(
                st.lists(inner, max_size=3),
                st.dictionaries(
                    st.one_of(plain_keys, secret_keys),
                    st.one_of(inner, st.just(SECRET)),
                    max_size=4,
                ),
            ),
            max_leaves=20,
        )
    )
    return {draw(secret_keys): SECRET, "tree": tree}


class TestRedactionProperty:
    @settings(max_examples=150, deadline=None)
    @given(payload=nested_with_secrets())
    def test_no_secret_value_reaches_the_sink(self, payload: Any) -> None:
        memory = sinks.MemorySink()
        auditor = auditloop.Auditor(sinks=[memory])

        auditor.emit("x", payload=payload)

        assert 1 == len(memory.lines)
        line = memory.lines[0].decode()
        # A SECRET value may only appear under a non-secret key; check the
        # decoded structure: every secret key's value is the marker.
        record = orjson.loads(line)

        def check(value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    if Redactor().is_secret(k):
                        assert REDACTED == v
                    else:
                        check(v)
            elif isinstance(value, list):
                for v in value:
                    check(v)

        check(record["attributes"])
        assert REDACTED == next(iter(record["attributes"]["payload"].values()))


class TestBytesKeys:
    def test_raw_asgi_header_pairs_are_redacted_by_name(
        self, memory: sinks.MemorySink
    ) -> None:
        headers = {
            b"cookie": b"session=abc123secret",
            b"X-Api-Key": b"k-9f8e7d6c5b4a",
            b"accept": b"text/html",
        }
        auditloop.emit("http.debug", headers=headers)

        assert {
            "b'cookie'": REDACTED,
            "b'X-Api-Key'": REDACTED,
            "b'accept'": "text/html",
        } == memory.events[0].attributes["headers"]
        assert b"abc123secret" not in memory.lines[0]
        assert b"9f8e7d6c5b4a" not in memory.lines[0]

    def test_non_ascii_bytes_keys_are_read_as_latin_1(self) -> None:
        redactor = Redactor(extra_keys=["caf\xe9"])

        assert redactor.is_secret(b"caf\xe9")
        assert not redactor.is_secret(b"caf")
