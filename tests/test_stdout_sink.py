"""StdoutSink: JSON lines, or one readable line per event."""

from __future__ import annotations

import io

import orjson
import pytest

import auditloop
from auditloop import ConfigurationError, sinks
from auditloop.sinks import Delivery, StdoutSink

SYNC = Delivery(mode="sync")


class TestJson:
    def test_one_json_object_per_line(self) -> None:
        stream = io.StringIO()
        auditor = auditloop.Auditor(sinks=[StdoutSink(stream=stream, delivery=SYNC)])

        auditor.emit("a", n=1)
        auditor.emit("b", n=2)

        lines = stream.getvalue().splitlines()
        assert ["a", "b"] == [orjson.loads(line)["action"] for line in lines]
        assert stream.getvalue().endswith("\n")

    def test_a_batch_is_written_as_lines(self) -> None:
        stream = io.StringIO()

        StdoutSink(stream=stream).write([b'{"a":1}', b'{"b":2}'])

        assert '{"a":1}\n{"b":2}\n' == stream.getvalue()

    def test_default_stream_is_stdout_at_write_time(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        sink = StdoutSink()
        auditloop.configure(sinks=[sink])

        auditloop.emit("to.stdout")
        assert auditloop.flush(5)

        assert "to.stdout" == orjson.loads(capsys.readouterr().out)["action"]

    def test_flush_and_close_flush_the_stream_but_do_not_close_it(self) -> None:
        class Stream(io.StringIO):
            flushes = 0

            def flush(self) -> None:
                self.flushes += 1

        stream = Stream()
        sink = StdoutSink(stream=stream)

        sink.flush()
        sink.close()

        assert 2 == stream.flushes
        assert not stream.closed


class TestPretty:
    def test_readable_line(self) -> None:
        stream = io.StringIO()
        auditor = auditloop.Auditor(
            sinks=[StdoutSink(format="pretty", stream=stream, delivery=SYNC)],
            clock=lambda: 1_767_225_600.5,
        )

        with auditloop.bind(actor="alice"):
            auditor.emit(
                "doc.delete",
                target="doc:1",
                outcome="failure",
                error=KeyError("gone"),
                size=3,
                tags=["a", "b"],
                note="hi",
            )
        auditor.emit("bare")

        first, second = stream.getvalue().splitlines()
        assert (
            "2026-01-01T00:00:00.500000Z FAILURE alice doc.delete doc:1 "
            'error=KeyError:\'gone\' size=3 tags=["a","b"] note=hi'
        ) == first
        assert "2026-01-01T00:00:00.500000Z SUCCESS - bare -" == second

    def test_control_characters_are_escaped(self) -> None:
        stream = io.StringIO()
        auditor = auditloop.Auditor(
            sinks=[StdoutSink(format="pretty", stream=stream, delivery=SYNC)]
        )

        auditor.emit("x", evil="\x1b[2J\r\nfake line\x07\x7f\u0085\u202e")

        out = stream.getvalue()
        assert 1 == out.count("\n")
        assert "evil=\\x1b[2J\\r\\nfake line\\x07\\x7f\\u0085\\u202e" in out

    def test_bad_format(self) -> None:
        with pytest.raises(ConfigurationError, match="format"):
            sinks.StdoutSink(format="xml")  # type: ignore[arg-type]
