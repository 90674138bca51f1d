"""Redaction by value: secret patterns, Luhn, hash mode, best-effort vs strict."""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import auditloop
from auditloop import Auditor, sinks
from auditloop._redact import REDACTED, Redactor, luhn_ok
from auditloop.exceptions import ConfigurationError

B64URL = string.ascii_letters + string.digits + "-_"
B64 = string.ascii_letters + string.digits + "+/"
AWS_PREFIXES = ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA")


def card_number(body: str) -> str:
    """*body* (15 digits) plus the Luhn check digit."""
    for check in "0123456789":
        if luhn_ok(body + check):
            return body + check
    raise AssertionError("unreachable")


# -- secret families: (text as planted, the parts that must never appear) ----

tokens = st.text(B64URL, min_size=16, max_size=40)


@st.composite
def bearer(draw: st.DrawFn) -> tuple[str, list[str]]:
    word = draw(st.sampled_from(["Bearer", "bearer", "BEARER"]))
    token = draw(tokens)
    return f"{word} {token}", [token]


@st.composite
def jwt(draw: st.DrawFn) -> tuple[str, list[str]]:
    parts = [
        "eyJ" + draw(st.text(B64URL, min_size=10, max_size=30)),
        "eyJ" + draw(st.text(B64URL, min_size=10, max_size=30)),
        draw(st.text(B64URL, min_size=10, max_size=40)),
    ]
    token = ".".join(parts)
    return token, [token]


@st.composite
def aws_key(draw: st.DrawFn) -> tuple[str, list[str]]:
    key = draw(st.sampled_from(AWS_PREFIXES)) + draw(
        st.text(string.ascii_uppercase + string.digits, min_size=16, max_size=16)
    )
    return key, [key]


@st.composite
def private_key(draw: st.DrawFn) -> tuple[str, list[str]]:
    kind = draw(st.sampled_from(["", "RSA ", "EC ", "OPENSSH "]))
    body = draw(st.text(B64, min_size=40, max_size=80))
    block = (
        f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----"
    )
    return block, [body]


@st.composite
def card(draw: st.DrawFn) -> tuple[str, list[str]]:
    number = card_number(draw(st.text(string.digits, min_size=15, max_size=15)))
    sep = draw(st.sampled_from(["", " ", "-"]))
    formatted = sep.join(number[i : i + 4] for i in range(0, 16, 4))
    return formatted, [formatted, number]


@st.composite
def email(draw: st.DrawFn) -> tuple[str, list[str]]:
    local = draw(st.text(string.ascii_lowercase + "._", min_size=3, max_size=12))
    domain = draw(st.text(string.ascii_lowercase, min_size=3, max_size=10))
    address = f"x{local}@{domain}.example"
    return address, [address]


def families(emails: bool) -> st.SearchStrategy[tuple[str, list[str]]]:
    base = [bearer(), jwt(), aws_key(), private_key(), card()]
    return st.one_of(*base, *([email()] if emails else []))


@dataclasses.dataclass
class Box:
    content: Any


filler = st.text(string.ascii_letters + string.digits + " .,:", max_size=12)
keys = st.text(string.ascii_lowercase, min_size=1, max_size=8).filter(
    lambda k: k not in {"token", "secret", "session", "cookie", "passwd"}
)


@st.composite
def planted(draw: st.DrawFn, emails: bool) -> tuple[dict[str, Any], list[str]]:
    """Attributes with one secret at a random depth, among harmless data."""
    secret, cores = draw(families(emails))
    value: Any = f"{draw(filler)} {secret} {draw(filler)}"
    if secret.replace(" ", "").replace("-", "").isdigit() and draw(st.booleans()):
        value = int(cores[-1])  # a card number stored as an integer
    for _ in range(draw(st.integers(0, 6))):
        shape = draw(st.sampled_from(["dict", "list", "tuple", "set", "box"]))
        if shape == "dict":
            value = {draw(keys): value, "n": draw(st.integers())}
        elif shape == "list":
            value = [draw(filler), value]
        elif shape == "tuple":
            value = (value, draw(st.integers()))
        elif shape == "set" and isinstance(value, str | int):
            value = {value, draw(filler)}
        else:
            value = Box(value)
    return {draw(keys): value, "note": draw(filler)}, cores


class TestNoSecretReachesASink:
    @pytest.mark.parametrize("mode", ["best-effort", "strict"])
    @pytest.mark.parametrize("emails", [False, True])
    def test_planted_secrets_never_appear_in_sink_output(
        self, tmp_path: Path, mode: str, emails: bool
    ) -> None:
        memory = sinks.MemorySink()
        path = tmp_path / f"{mode}-{emails}.jsonl"
        file_sink = sinks.FileSink(path, delivery=sinks.Delivery(mode="sync"))
        redactor = Redactor(mode=mode, emails=emails)  # type: ignore[arg-type]
        auditor = Auditor(sinks=[memory, file_sink], redact=redactor)
        checked: list[bytes] = []

        @settings(
            max_examples=150,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(planted(emails))
        def check(case: tuple[dict[str, Any], list[str]]) -> None:
            attributes, cores = case
            memory.clear()
            auditor.emit("doc.update", attributes=attributes)
            (line,) = memory.lines
            assert [c for c in cores if c.encode() in line] == []
            checked.append(line)

        check()
        auditor.shutdown()

        assert checked
        assert checked == path.read_bytes().splitlines()  # the file got the same

    def test_secrets_in_reason_and_error_message_are_redacted(self) -> None:
        memory = sinks.MemorySink()
        auditor = Auditor(sinks=[memory])
        token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl"

        auditor.emit(
            "login",
            outcome="failure",
            reason=f"rejected {token}",
            error=ValueError(f"bad token {token}"),
        )
        event = memory.events[0]

        assert f"rejected {REDACTED}" == event.reason
        assert {"type": "ValueError", "message": f"bad token {REDACTED}"} == dict(
            event.error or {}
        )


class TestPatterns:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                "Authorization: Bearer abcdefgh12345678",
                "Authorization: Bearer [REDACTED]",
            ),
            ("key AKIAIOSFODNN7EXAMPLE here", "key [REDACTED] here"),
            (
                "-----BEGIN PRIVATE KEY-----\nMIIEvQ\n-----END PRIVATE KEY----- ok",
                "[REDACTED] ok",
            ),
            ("-----BEGIN EC PRIVATE KEY-----\nMIIE (cut)", "[REDACTED]"),
            ("card 4111 1111 1111 1111 ok", "card [REDACTED] ok"),
            ("order 12 4111-1111-1111-1111", "order 12 [REDACTED]"),
            ("amex 378282246310005", "amex [REDACTED]"),
        ],
    )
    def test_secrets_are_replaced_in_place(self, text: str, expected: str) -> None:
        assert expected == Redactor().scan(text)

    @pytest.mark.parametrize(
        "text",
        [
            "4111 1111 1111 1112",  # fails Luhn
            "2026-01-01T00:00:00.123456Z",
            "call +1 555-123-4567",
            "id 123456789012",  # 12 digits: too short for a card
            # UUIDs whose digit groups pass the Luhn check: ids, not cards.
            "01a21681-8824-7152-872a-13edf087a452",
            "evidence 01234567-1234-0005-1234-123456789012 kept",
            # Hex ids whose digits pass the Luhn check: ids, not cards.
            "request ab22840213c049fbae9918490129818c",
            "id 9918490129818abc",
            "99999999999999999999999999",  # 26 digits: too long
            "Bearer abc",  # too short to be a token
            "AKIA-not-a-key",
            "user alice@example.com",  # e-mail addresses are off by default
            "short",
        ],
    )
    def test_harmless_text_is_kept(self, text: str) -> None:
        redactor = Redactor()

        assert text == redactor.scan(text)
        assert text == redactor.scan(text)  # also once remembered as clean

    def test_a_card_next_to_a_uuid_is_still_found(self) -> None:
        text = "req 01a21681-8824-7152-9abc-123456789012 4111 1111 1111 1111"
        assert "req 01a21681-8824-7152-9abc-123456789012 [REDACTED]" == (
            Redactor().scan(text)
        )

    def test_emails_are_redacted_when_asked(self) -> None:
        assert "to [REDACTED]" == Redactor(emails=True).scan("to a@b.io")

    def test_card_numbers_stored_as_integers(self) -> None:
        redactor = Redactor()

        assert REDACTED == redactor.redact(4111111111111111)
        assert {"n": REDACTED, "m": 4111111111111112} == redactor.redact(
            {"n": 4111111111111111, "m": 4111111111111112}
        )

    def test_values_false_turns_value_scanning_off(self) -> None:
        redactor = Redactor(values=False)
        data = {"a": "Bearer abcdefgh12345678", "b": 4111111111111111}

        assert data == redactor.redact(data)
        assert "Bearer abcdefgh12345678" == redactor.redact("Bearer abcdefgh12345678")

    def test_non_json_values_are_scanned_as_the_encoder_would_write_them(
        self,
    ) -> None:
        redactor = Redactor()

        result = redactor.redact(
            {"box": Box("Bearer abcdefgh12345678"), "raw": b"key AKIAIOSFODNN7EXAMPLE"}
        )

        assert {
            "box": {"content": "Bearer [REDACTED]"},
            "raw": "key [REDACTED]",
        } == result

    def test_the_callers_objects_are_not_changed(self) -> None:
        data = {"a": ["Bearer abcdefgh12345678"]}

        Redactor().redact(data)

        assert {"a": ["Bearer abcdefgh12345678"]} == data


class TestHashMode:
    def test_the_same_secret_maps_to_the_same_token(self) -> None:
        one, two = Redactor(hash_key=b"h"), Redactor(hash_key="h")
        text = "Bearer abcdefgh12345678 and Bearer abcdefgh12345678"

        first, second = one.scan(text), two.scan(text)

        assert first == second
        assert "abcdefgh12345678" not in first
        tokens = first.replace("Bearer ", "").split(" and ")
        assert tokens[0] == tokens[1]
        assert tokens[0].startswith("[REDACTED:")
        assert 16 + len("[REDACTED:]") == len(tokens[0])

    def test_different_secrets_or_keys_give_different_tokens(self) -> None:
        redactor = Redactor(hash_key=b"h")

        assert redactor.token("secret-1") != redactor.token("secret-2")
        assert redactor.token("secret-1") != Redactor(hash_key=b"g").token("secret-1")

    def test_key_based_redaction_hashes_too(self) -> None:
        redactor = Redactor(hash_key=b"h")

        result = redactor.redact({"password": "hunter2", "api_key": {"v": 1}})

        assert result["password"] == redactor.token("hunter2")
        assert result["api_key"] == redactor.token({"v": 1})
        assert result["password"] != result["api_key"]


class BrokenMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("cannot iterate")

    def __len__(self) -> int:
        return 1


class TestModes:
    def test_best_effort_replaces_only_what_it_cannot_walk(self) -> None:
        memory = sinks.MemorySink()
        auditor = Auditor(sinks=[memory], redact=Redactor())

        auditor.emit("x", broken=BrokenMapping(), kept="fine")

        assert {"broken": REDACTED, "kept": "fine"} == dict(memory.events[0].attributes)

    def test_strict_drops_all_attributes_and_flags_the_event(self) -> None:
        memory = sinks.MemorySink()
        auditor = Auditor(sinks=[memory], redact=Redactor(mode="strict"))

        import auditloop

        with auditloop.bind(actor="alice", request_id="r-1"):
            auditor.emit("x", broken=BrokenMapping(), kept="fine")
        event = memory.events[0]

        assert {"redaction_failed": True} == dict(event.attributes)
        assert {} == dict(event.context)
        assert "alice" == event.actor.id  # type: ignore[union-attr]
        assert 1 == auditor.counters.get("redaction_failed")

    def test_both_modes_scan_keys(self) -> None:
        text_key = "user eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig"

        strict = Redactor(mode="strict").redact({text_key: 1})
        lenient = Redactor().redact({text_key: 1})

        assert {"user [REDACTED]": 1} == strict
        assert {"user [REDACTED]": 1} == lenient

    def test_a_cycle_is_cut_in_both_modes(self) -> None:
        for mode in ("best-effort", "strict"):
            data: dict[str, Any] = {}
            data["self"] = data

            result = Redactor(mode=mode).redact(data)

            assert {"self": "<cyclic>"} == result


class TestConfiguration:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"mode": "lenient"}, 'Redactor: mode must be "best-effort" or "strict"'),
            ({"hash_key": b""}, "Redactor: hash_key must be non-empty"),
            ({"values": "yes"}, "Redactor: values must be True or False"),
            ({"emails": 1}, "Redactor: emails must be True or False"),
            ({"marker": 3}, "Redactor: marker must be a string"),
        ],
    )
    def test_bad_options(self, kwargs: dict[str, Any], message: str) -> None:
        with pytest.raises(ConfigurationError) as info:
            Redactor(**kwargs)

        assert str(info.value).startswith(message)

    def test_repr_names_the_mode_but_never_the_hash_key(self) -> None:
        text = repr(Redactor(mode="strict", hash_key=b"topsecret", emails=True))

        assert "topsecret" not in text
        assert "mode='strict'" in text
        assert "hash_key=<set>" in text


class TestCorners:
    def test_a_value_orjson_refuses_still_gets_a_token(self) -> None:
        redactor = Redactor(hash_key=b"h")

        assert redactor.token(2**70).startswith("[REDACTED:")

    def test_the_clean_string_memory_is_bounded(self) -> None:
        redactor = Redactor()

        for i in range(5000):
            assert f"harmless text number {i:06d}" == redactor.scan(
                f"harmless text number {i:06d}"
            )

        assert len(redactor._clean) <= 4096

    def test_a_strict_failure_without_an_auditor_is_still_flagged(self) -> None:
        event = {"attributes": {"a": BrokenMapping()}, "context": {"x": 1}}

        result = Redactor(mode="strict")(None, "emit", event)

        assert {"attributes": {"redaction_failed": True}} == result

    def test_error_messages_that_are_clean_or_missing_are_kept(self) -> None:
        error = {"type": "ValueError", "message": "plain message"}
        event = {"error": error, "reason": None}

        Redactor()(None, "emit", event)

        assert error is event["error"]
        assert {"type": "X"} == Redactor()(None, "emit", {"error": {"type": "X"}})[
            "error"
        ]

    def test_repr_shows_a_custom_key_list(self) -> None:
        assert "keys=['pin']" in repr(Redactor(keys=["pin"]))


CARD = "4111111111111111"
BEARER = "Bearer abcdefgh12345678XYZ"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2ln"


def written(redactor: Redactor, **fields: Any) -> bytes:
    """The line an Auditor with *redactor* writes for one emit(**fields)."""
    memory = sinks.MemorySink()
    auditor = Auditor(sinks=[memory], redact=redactor)
    auditor.emit("x.y", **fields)
    auditor.shutdown()
    (line,) = memory.lines
    return line


class TestKeysAsWritten:
    @pytest.mark.parametrize("mode", ["best-effort", "strict"])
    @pytest.mark.parametrize(
        ("key", "secret"),
        [
            (int(CARD), CARD),
            (CARD.encode(), CARD),
            (BEARER.encode(), "abcdefgh12345678XYZ"),
            ((BEARER, 1), "abcdefgh12345678XYZ"),
            ((CARD, 1), CARD),
            ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ],
    )
    def test_non_string_keys_are_scanned_as_the_encoder_writes_them(
        self, mode: str, key: object, secret: str
    ) -> None:
        line = written(
            Redactor(mode=mode),  # type: ignore[arg-type]
            attributes={"by": {key: "v"}},
        )

        assert secret.encode() not in line
        assert b"[REDACTED]" in line

    def test_a_redacted_key_keeps_the_rest_of_its_text(self) -> None:
        result = Redactor().redact({BEARER.encode(): 1, (CARD, 2): 3})

        assert {"b'Bearer [REDACTED]'": 1, "('[REDACTED]', 2)": 3} == result

    def test_short_e_mail_keys_are_redacted_when_e_mails_are(self) -> None:
        redactor = Redactor(emails=True, mode="strict")

        assert {"[REDACTED]": "[REDACTED]"} == redactor.redact(
            {"bob@corp.io": "bob@corp.io"}
        )
        assert {"bob@corp.io": 1} == Redactor().redact({"bob@corp.io": 1})

    def test_a_key_holding_a_secret_is_redacted_every_time(self) -> None:
        redactor = Redactor()

        first = redactor.redact({CARD: 1})
        second = redactor.redact({CARD: 2})

        assert ({"[REDACTED]": 1}, {"[REDACTED]": 2}) == (first, second)
        assert CARD not in redactor._cache
        assert redactor.is_secret("db_password")
        assert not redactor.is_secret(CARD)


class TestActorTargetError:
    @pytest.mark.parametrize("mode", ["best-effort", "strict"])
    def test_secrets_in_actor_target_and_error_mappings_are_redacted(
        self, mode: str
    ) -> None:
        line = written(
            Redactor(mode=mode),  # type: ignore[arg-type]
            actor={"id": "alice", "session": "s3cr3t-session-id"},
            target=f"token:{JWT}",
            error={"message": "failed", "detail": BEARER, "password": "hunter2"},
        )

        for secret in ("s3cr3t", JWT[:20], "abcdefgh12345678", "hunter2"):
            assert secret.encode() not in line
        event = orjson.loads(line)
        assert {"id": "alice", "type": "user", "session": REDACTED} == event["actor"]
        assert {"id": f"token:{REDACTED}", "type": "token"} == event["target"]
        assert {
            "message": "failed",
            "detail": f"Bearer {REDACTED}",
            "password": REDACTED,
        } == event["error"]

    def test_the_bound_actor_is_redacted_in_every_event(self) -> None:
        memory = sinks.MemorySink()
        auditor = Auditor(sinks=[memory])

        with auditloop.bind(actor={"id": "alice", "token": "t0ps3cr3t"}):
            auditor.emit("a.b")
            auditor.emit("a.c", target="doc:1")
        auditor.shutdown()

        assert [b"t0ps3cr3t" in line for line in memory.lines] == [False, False]
        assert [REDACTED, REDACTED] == [
            orjson.loads(line)["actor"]["token"] for line in memory.lines
        ]

    def test_clean_actor_and_target_are_kept_as_they_are(self) -> None:
        redactor = Redactor(emails=True)
        actor = {"id": "alice@example.com", "type": "user", "name": "Alice"}
        target = {"id": "document:1", "type": "document"}
        event: dict[str, Any] = {"actor": actor, "target": target}

        result = redactor(None, "emit", event)
        again = redactor(None, "emit", {"actor": actor, "target": target})

        assert actor is result["actor"]  # e-mail addresses say who: kept
        assert target is result["target"]
        assert (actor, target) == (again["actor"], again["target"])

    def test_a_strict_failure_in_the_actor_hides_only_that_part(self) -> None:
        event = {"actor": {"id": "alice", "extra": BrokenMapping()}, "attributes": {}}

        result = Redactor(mode="strict")(None, "emit", event)

        assert {"id": "alice", "extra": REDACTED} == result["actor"]

    @pytest.mark.parametrize("emails", [False, True])
    def test_a_secret_named_actor_field_is_redacted(self, emails: bool) -> None:
        redactor = Redactor(extra_keys=iter(["ip", "pin"]), emails=emails)
        actor = {"id": "a", "ip": "10.0.0.1", "pin": "1234"}

        result = redactor(None, "emit", {"actor": actor})

        assert {"id": "a", "ip": REDACTED, "pin": REDACTED} == result["actor"]


class TestHashCorrelation:
    def test_a_bearer_token_gets_one_token_by_key_or_by_pattern(self) -> None:
        redactor = Redactor(hash_key=b"correlation-key")
        secret = "abcdefgh12345678XYZ"

        by_key = redactor.redact({"authorization": f"Bearer {secret}"})
        by_value = redactor.redact({"header": f"Authorization: Bearer {secret}"})

        token = redactor.token(secret)
        assert {"authorization": token} == by_key
        assert {"header": f"Authorization: Bearer {token}"} == by_value

    def test_a_card_number_gets_one_token_grouped_or_not(self) -> None:
        redactor = Redactor(hash_key=b"correlation-key")

        result = redactor.redact(
            {
                "spaces": "card 4111 1111 1111 1111",
                "hyphens": "4111-1111-1111-1111",
                "plain": f"card {CARD}",
                "number": int(CARD),
                "card_number": "4111 1111 1111 1111",
            }
        )

        token = redactor.token(CARD)
        assert {
            "spaces": f"card {token}",
            "hyphens": token,
            "plain": f"card {token}",
            "number": token,
            "card_number": token,
        } == result

    def test_other_values_are_hashed_whole(self) -> None:
        redactor = Redactor(hash_key=b"h")

        assert redactor.token("Bearer x") != redactor.token("x")
        assert redactor.token("1234 5678") != redactor.token("12345678")
