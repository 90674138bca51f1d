"""ChainWriter.seal: the batch fast path writes exactly the documented format."""

from __future__ import annotations

import hashlib
import hmac

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from auditloop._chain import GENESIS, ChainWriter

KEY = b"k" * 32

# Encoder-like lines (JSON objects with members) and the odd ones a direct
# ``sink.write`` may hand over: not JSON, empty object, empty, bare brace.
_events = st.builds(
    lambda i, text: orjson.dumps({"id": f"e{i}", "action": "doc.read", "t": text}),
    st.integers(0, 10**6),
    st.text(max_size=40),
)
_odd = st.sampled_from([b"", b"{}", b"}", b"x}", b"not json", b"{", b"{\xff"])
_batches = st.lists(st.one_of(_events, _events, _events, _odd), max_size=12)
_keys = st.sampled_from([(KEY, "k1"), (KEY, None), (None, None), (b"x" * 100, "a")])


def reference(
    batch: list[bytes], key: bytes | None, key_id: str | None, seq: int, prev: bytes
) -> bytes:
    """The format of docs/integrity.md, written the slow, obvious way."""
    out = []
    kid = b',"key_id":"' + key_id.encode() + b'"' if key_id else b""
    for item in batch:
        seq += 1
        raw = item
        if raw[-1:] != b"}":
            raw = orjson.dumps({"unparsed": item.decode("utf-8", "replace")})
        members = kid + b',"seq":%d,"prev":"%s"' % (seq, prev)
        if raw == b"{}":
            canonical = b"{" + members[1:] + b"}"
        else:
            canonical = raw[:-1] + members + b"}"
        if key is None:
            digest = hashlib.sha256(canonical).hexdigest()
        else:
            digest = hmac.new(key, canonical, hashlib.sha256).hexdigest()
        prev = digest.encode()
        out.append(canonical[:-1] + b',"hash":"' + prev + b'"}\n')
    return b"".join(out)


class TestSeal:
    @settings(max_examples=200, deadline=None)
    @given(st.lists(_batches, min_size=1, max_size=4), _keys)
    def test_batches_match_the_documented_format(
        self, batches: list[list[bytes]], key: tuple[bytes | None, str | None]
    ) -> None:
        writer = ChainWriter(key[0], key[1], 41, b"f" * 64)
        seq, prev = 41, b"f" * 64

        for batch in batches:
            expected = reference(batch, key[0], key[1], seq, prev)
            assert expected == writer.seal(batch)
            seq += len(batch)
            if batch:
                prev = expected.splitlines()[-1][-66:-2]
            assert (seq, prev) == (writer.seq, writer.head)

    def test_a_batch_and_its_lines_one_by_one_give_the_same_bytes(self) -> None:
        batch = [orjson.dumps({"id": f"e{i}", "n": i}) for i in range(600)]
        whole = ChainWriter(KEY, "k1")
        single = ChainWriter(KEY, "k1")

        together = whole.seal(batch)
        apart = b"".join(single.seal([line]) for line in batch)

        assert apart == together
        assert GENESIS.decode() == orjson.loads(together.split(b"\n", 1)[0])["prev"]

    def test_any_iterable_is_accepted(self) -> None:
        batch = [orjson.dumps({"id": f"e{i}"}) for i in range(3)]

        from_list = ChainWriter(KEY, None).seal(batch)
        from_generator = ChainWriter(KEY, None).seal(line for line in batch)

        assert from_list == from_generator

    def test_an_empty_batch_writes_nothing_and_keeps_the_head(self) -> None:
        writer = ChainWriter(KEY, None, 7, b"a" * 64)

        assert b"" == writer.seal([])
        assert (7, b"a" * 64) == (writer.seq, writer.head)
