"""Verifying an integrity-chained audit trail: ``verify`` and ``chain_head``.

The verifier streams every line once. A line whose hash checks out is
*trusted*; its ``seq`` and ``prev`` are compared with the last trusted
record. Lines that fail are held in a short *run* until the next trusted
line shows what they were: extra lines (inserted, torn) when the chain goes
on unbroken, replacements (modified) when they fill a gap in ``seq``. Gaps
nobody fills are deleted records (or a missing rotated file); a trusted
record whose ``seq`` falls into an open gap was moved (reordered). So each
kind of tampering is reported once, where it happened, without cascading
into every line that follows.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any, Final

import attrs
import orjson

from auditloop._chain import (
    GENESIS,
    Hasher,
    check_key,
    last_link,
    make_hasher,
    parse_link,
)
from auditloop.exceptions import ConfigurationError

__all__ = ["FINDING_KINDS", "Finding", "VerifyResult", "chain_head", "verify"]

#: Every ``Finding.kind``, in the order ``docs/integrity.md`` explains them.
FINDING_KINDS: Final[tuple[str, ...]] = (
    "modified",
    "deleted",
    "inserted",
    "reordered",
    "truncated",
    "missing_file",
    "wrong_key",
    "torn",
    "broken_link",
    "head_mismatch",
    "unchained",
    "unreadable",
)

_ROTATED: Final = re.compile(r"^(?P<base>.+)\.(?P<n>[0-9]+)(?:\.gz)?$")
_HASH_MEMBER: Final = b',"hash":"'
_PREV_MEMBER: Final = b',"prev":"'
_SEQ_MEMBER: Final = b',"seq":'
_KEY_ID_MEMBER: Final = b',"key_id":"'
_RETENTION: Final = b'"action":"auditloop.retention"'
_SYSTEM_ACTOR: Final = {"id": "auditloop", "type": "system"}
_RUN_LIMIT: Final = 10_000  # failing lines remembered one by one

PathArg = str | os.PathLike[str]


@attrs.frozen
class Finding:
    """One problem found in an audit trail.

    Attributes:
        file: the file, as given (or discovered) by :func:`verify`.
        line: 1-based line number (for ``truncated``: the line after the
            last one; for ``unreadable``: where reading stopped, or 0).
        kind: one of :data:`FINDING_KINDS`.
        message: what is wrong, for people.
    """

    file: str
    line: int
    kind: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        """Return the finding as a JSON-serialisable dict."""
        return {
            "file": self.file,
            "line": self.line,
            "kind": self.kind,
            "message": self.message,
        }

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.kind}: {self.message}"


@attrs.frozen
class VerifyResult:
    """What :func:`verify` found.

    Attributes:
        findings: the problems, in trail order; empty when the trail is intact.
        files: the files checked, oldest first.
        records: lines checked.
        head: the last trusted record as ``{"file", "count", "head"}`` (plus
            ``"key_id"``), the form :func:`chain_head` returns; None when no
            record verified.
    """

    findings: tuple[Finding, ...]
    files: tuple[str, ...]
    records: int
    head: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        """True when there is no finding at all."""
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-serialisable dict (``ok`` included)."""
        return {
            "ok": self.ok,
            "records": self.records,
            "files": list(self.files),
            "head": self.head,
            "findings": [f.to_dict() for f in self.findings],
        }


# -- files -------------------------------------------------------------------


class _File:
    __slots__ = ("base", "number", "path")

    def __init__(self, path: Path, base: Path, number: int) -> None:
        self.path = path
        self.base = base
        self.number = number  # 0: the active file; N: path.N or path.N.gz


def _expand(paths: PathArg | Iterable[PathArg]) -> list[_File]:
    """Order *paths* as a trail: each file's rotated siblings, oldest first.

    A path that is not itself a rotated name (``x.N``/``x.N.gz``) brings its
    existing rotated siblings along, so ``verify("audit.jsonl")`` checks the
    whole trail. A name like ``audit.20260101`` is a rotated file only when
    its base (``audit``) is given or exists, or when it has no rotated
    siblings of its own; otherwise it is a trail's active file.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    given_paths = [Path(raw) for raw in paths]
    given = set(given_paths)
    groups: dict[Path, dict[tuple[int, str], _File]] = {}
    for path in given_paths:
        match = _ROTATED.match(path.name)
        if match and _is_rotated(path, path.with_name(match["base"]), given):
            base = path.with_name(match["base"])
            entry = _File(path, base, int(match["n"]))
            groups.setdefault(base, {})[(entry.number, path.name)] = entry
            continue
        group = groups.setdefault(path, {})
        group[(0, path.name)] = _File(path, path, 0)
        try:
            names = [entry.name for entry in path.parent.iterdir()]
        except OSError:
            continue
        prefix = path.name + "."
        for name in names:
            if not name.startswith(prefix):
                continue
            sibling = _ROTATED.match(name)
            if sibling and sibling["base"] == path.name:
                n = int(sibling["n"])
                group[(n, name)] = _File(path.with_name(name), path, n)
    files: list[_File] = []
    for group in groups.values():
        files.extend(group[k] for k in sorted(group, key=lambda k: (-k[0], k[1])))
    return files


def _is_rotated(path: Path, base: Path, given: set[Path]) -> bool:
    """Whether *path*, named ``base.N``, is a rotated file of *base*."""
    if base in given or base.exists():
        return True
    prefix = path.name + "."
    try:
        names = [entry.name for entry in path.parent.iterdir()]
    except OSError:
        return True
    for name in names:
        if name.startswith(prefix):
            sibling = _ROTATED.match(name)
            if sibling and sibling["base"] == path.name:
                return False  # it has rotated files of its own: an active file
    return True


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


# -- keys and anchors --------------------------------------------------------

Keys = bytes | dict[str, bytes] | None


def _check_keys(key: object) -> Keys:
    if isinstance(key, Mapping):
        checked: dict[str, bytes] = {}
        for key_id, value in key.items():
            if not isinstance(key_id, str):
                raise ConfigurationError(
                    f"verify: key ids must be strings, got {key_id!r}"
                )
            one = check_key(value, f"verify: key[{key_id!r}]")
            assert one is not None  # check_key returns None only for None
            checked[key_id] = one
        if not checked:
            raise ConfigurationError("verify: key mapping is empty")
        return checked
    if key is None:
        return None
    return check_key(key, "verify")


def _check_expected(expected: object) -> tuple[int | None, bytes] | None:
    """Normalise ``expected_head`` into ``(count or None, head hex bytes)``."""
    if expected is None:
        return None
    if isinstance(expected, str | bytes):
        text = expected.decode() if isinstance(expected, bytes) else expected
        count = None
    else:
        source: Any = expected
        if not isinstance(source, Mapping):  # an AuditEvent (a checkpoint)
            source = getattr(expected, "attributes", None)
        elif "attributes" in source and "head" not in source:
            source = source["attributes"]
        if not isinstance(source, Mapping) or "head" not in source:
            raise ConfigurationError(
                "verify: expected_head must be a hash, a chain_head() result "
                f"or an auditloop.checkpoint event, got {expected!r}"
            )
        text = source["head"]
        count = source.get("count")
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int)
        ):
            raise ConfigurationError(
                f"verify: expected_head count must be an integer, got {count!r}"
            )
    if not isinstance(text, str) or not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ConfigurationError(
            f"verify: expected_head hash must be 64 lowercase hex digits, got {text!r}"
        )
    return count, text.encode()


# -- the verifier --------------------------------------------------------------


class _Failed:
    """A line that did not verify, waiting for the next trusted line."""

    __slots__ = ("alt_ok", "file", "form", "key_id", "line", "unterminated")

    def __init__(  # noqa: PLR0917 - private record
        self,
        file: int,
        line: int,
        form: str,
        key_id: str | None,
        alt_ok: bool,
        unterminated: bool,
    ) -> None:
        self.file = file
        self.line = line
        self.form = form  # "chain" (bad hash), "json" (no chain), "garbage"
        self.key_id = key_id
        self.alt_ok = alt_ok  # verifies as plain SHA-256 although a key was given
        self.unterminated = unterminated


class _Gap:
    __slots__ = ("file", "hi", "line", "lo", "prev_file")

    def __init__(self, lo: int, hi: int, file: int, line: int, prev_file: int) -> None:
        self.lo = lo
        self.hi = hi
        self.file = file
        self.line = line
        self.prev_file = prev_file


class _Verifier:
    def __init__(self, keys: Keys, expected: tuple[int | None, bytes] | None) -> None:
        self.keys = keys
        self.hasher: Hasher | None = (
            make_hasher(keys) if not isinstance(keys, dict) else None
        )
        self.hashers = (
            {k: make_hasher(v) for k, v in keys.items()}
            if isinstance(keys, dict)
            else {}
        )
        self.plain = make_hasher(None)
        self.expected = expected
        self.expected_seen: tuple[int, int, bool] | None = None  # file, line, match
        self.files: list[_File] = []
        self.findings: list[tuple[int, int, int, Finding]] = []
        self.order = 0
        self.records = 0
        # The last trusted record.
        self.seq: int | None = None
        self.next_seq = -1  # seq + 1 once a record is trusted
        self.head = b""
        self.head_at = (0, 0)
        self.head_line = b""
        self.start: tuple[int, int, int] | None = None  # seq, file, line
        self.run: list[_Failed] = []
        self.run_extra = 0  # failing lines beyond _RUN_LIMIT
        self.gaps: list[_Gap] = []
        self.retained_from: set[int] = set()
        self.last_line = (0, 0)

    # -- reporting -------------------------------------------------------------

    def add(self, file: int, line: int, kind: str, message: str) -> None:
        self.order += 1
        name = str(self.files[file].path) if self.files else ""
        self.findings.append(
            (file, line, self.order, Finding(name, line, kind, message))
        )

    # -- the main loop ---------------------------------------------------------

    def check_file(self, index: int) -> None:
        path = self.files[index].path
        try:
            stream = _open(path)
        except OSError as exc:
            self.add(index, 0, "unreadable", f"cannot open: {exc.strerror or exc}")
            return
        lineno = 0
        records = 0
        cr_lines = 0
        cr_first = 0
        hasher = self.hasher
        # The hot loop: offsets instead of slices where possible, and the
        # common case (the next link, where it belongs) handled inline.
        try:
            with stream:
                for raw in stream:
                    lineno += 1
                    terminated = raw.endswith(b"\n")
                    n = len(raw) - terminated
                    if not n:
                        continue
                    if raw[n - 1] == 0x0D:
                        # auditloop never writes a CR: a line ending was
                        # converted. Reported once per file; the record
                        # itself is still checked without it.
                        n -= 1
                        cr_lines += 1
                        cr_first = cr_first or lineno
                        if not n:
                            continue
                    records += 1
                    seq = -1
                    if (
                        n >= 160
                        and raw.startswith(b'"}', n - 2)
                        and raw.startswith(_HASH_MEMBER, n - 75)
                        and raw.startswith(_PREV_MEMBER, n - 149)
                        and raw[n - 76] == 0x22
                    ):
                        start = raw.rfind(_SEQ_MEMBER, 0, n - 149)
                        digits = raw[start + 7 : n - 149]
                        if start >= 0 and digits.isdigit() and len(digits) < 20:
                            seq = int(digits)
                            check = hasher or self.hasher_for(raw, start)
                            digest = raw[n - 66 : n - 2]
                            if (
                                check is not None
                                and check(raw[: n - 75], b"}") == digest
                            ):
                                prev = raw[n - 140 : n - 76]
                                if (
                                    seq == self.next_seq
                                    and prev == self.head
                                    and not self.run
                                ):
                                    self.next_seq = seq + 1
                                    self.seq = seq
                                    self.head = digest
                                    self.head_at = (index, lineno)
                                    if self.expected is not None:
                                        self.check_expected(seq, digest, index, lineno)
                                else:
                                    self.trusted(seq, prev, digest, index, lineno)
                                self.head_line = raw
                                if _RETENTION in raw:
                                    self.note_retention(raw[:n])
                                continue
                    self.failed(raw[:n], seq, index, lineno, terminated)
        except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
            self.add(index, lineno + 1, "unreadable", f"reading stopped: {exc}")
        self.records += records
        if lineno:
            self.last_line = (index, lineno)
        if cr_lines:
            lines = "this line ends" if cr_lines == 1 else f"{cr_lines} lines end"
            self.add(
                index,
                cr_first,
                "modified",
                f"{lines} with CR (\\r\\n line endings, which auditloop never "
                "writes): the file was rewritten, e.g. by a line-ending "
                "conversion; the records were checked without the CR",
            )

    def hasher_for(self, line: bytes, seq_start: int) -> Hasher | None:
        key_id = _key_id(line, seq_start)
        return self.hashers.get(key_id) if key_id is not None else None

    # -- trusted records -------------------------------------------------------

    def trusted(
        self, seq: int, prev: bytes, digest: bytes, file: int, line: int
    ) -> None:
        """Place a trusted record that is not simply the next link."""
        last = self.seq
        if last is None:
            self.first_trusted(seq, prev, file, line)
        elif seq == last + 1:
            if self.run:
                self.settle_run(slots=0)
            if prev != self.head:
                # Checked after a run too: lines between two trails spliced
                # together must not hide the splice.
                hf, hl = self.head_at
                self.add(
                    file,
                    line,
                    "broken_link",
                    f"prev does not match the hash of seq {last} "
                    f"({self.files[hf].path}:{hl}): two writers, or a spliced trail",
                )
        elif seq > last + 1:
            gap = seq - last - 1
            slots = min(len(self.run) + self.run_extra, gap)
            self.settle_run(slots=slots)
            if gap > slots:
                self.gaps.append(
                    _Gap(last + 1 + slots, seq - 1, file, line, self.head_at[0])
                )
        else:
            if self.run:
                self.settle_run(slots=0)
            self.out_of_order(seq, file, line)
            return
        self.seq = seq
        self.next_seq = seq + 1
        self.head = digest
        self.head_at = (file, line)
        if self.expected is not None:
            self.check_expected(seq, digest, file, line)

    def first_trusted(self, seq: int, prev: bytes, file: int, line: int) -> None:
        pending = len(self.run) + self.run_extra
        if (
            seq == 1
            and prev == GENESIS
            and self.run
            and all(entry.form == "json" for entry in self.run)
        ):
            # Records from before the sink had chain=True: one finding,
            # not one "inserted" per line.
            oldest, self.run, self.run_extra = self.run[0], [], 0
            self.add(
                oldest.file,
                oldest.line,
                "unchained",
                f"{pending} records before the chain starts carry no "
                "integrity chain (written before chain=True?): they cannot "
                "be verified",
            )
            self.start = (1, file, line)
            return
        slots = min(pending, seq - 1)
        first = self.run[0] if self.run else None
        self.settle_run(slots=slots)
        start_file, start_line = (first.file, first.line) if first else (file, line)
        self.start = (seq - slots, start_file, start_line)
        if seq == 1 and prev != GENESIS:
            self.add(file, line, "broken_link", "seq 1 does not start a chain")

    def out_of_order(self, seq: int, file: int, line: int) -> None:
        for i, gap in enumerate(self.gaps):
            if gap.lo <= seq <= gap.hi:
                if gap.lo == gap.hi:
                    del self.gaps[i]
                elif seq == gap.lo:
                    gap.lo += 1
                elif seq == gap.hi:
                    gap.hi -= 1
                else:
                    self.gaps.insert(
                        i + 1, _Gap(seq + 1, gap.hi, gap.file, gap.line, gap.prev_file)
                    )
                    gap.hi = seq - 1
                self.add(
                    file,
                    line,
                    "reordered",
                    f"seq {seq} is out of order: it belongs before "
                    f"{self.files[gap.file].path}:{gap.line}",
                )
                return
        self.add(
            file,
            line,
            "inserted",
            f"seq {seq} was already seen (the chain is at seq {self.seq}): "
            "a copy of an earlier record",
        )

    def check_expected(self, seq: int, digest: bytes, file: int, line: int) -> None:
        assert self.expected is not None
        count, head = self.expected
        if count is None:
            if digest == head:
                self.expected_seen = (file, line, True)
        elif seq == count:
            self.expected_seen = (file, line, digest == head)

    def note_retention(self, raw: bytes) -> None:
        """Remember where a trusted ``auditloop.retention`` record says the
        kept trail starts.

        Only the record the sink writes counts: top-level ``action``
        ``auditloop.retention``, ``category`` ``system`` and the system actor
        (an application event merely mentioning that action does not).
        """
        try:
            record = orjson.loads(raw)
            if (
                record["action"] != "auditloop.retention"
                or record.get("category") != "system"
                or record["actor"] != _SYSTEM_ACTOR
            ):
                return
            first = record["attributes"]["first_seq"]
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return
        if isinstance(first, int) and not isinstance(first, bool):
            self.retained_from.add(first)

    # -- failed lines ------------------------------------------------------------

    def failed(
        self, line: bytes, seq: int, file: int, lineno: int, terminated: bool
    ) -> None:
        if len(self.run) >= _RUN_LIMIT:
            self.run_extra += 1
            return
        key_id = None
        alt_ok = False
        if seq >= 0:
            form = "chain"
            n = len(line)
            key_id = _key_id(line, line.rfind(_SEQ_MEMBER, 0, n - 149))
            if self.keys is not None:
                alt_ok = (
                    self.plain(memoryview(line)[: n - 75], b"}") == line[n - 66 : n - 2]
                )
        else:
            try:
                form = "json" if isinstance(orjson.loads(line), dict) else "garbage"
            except orjson.JSONDecodeError:
                form = "garbage"
            if form == "json" and parse_link(line) is not None:  # pragma: no cover
                form = "chain"
        self.run.append(_Failed(file, lineno, form, key_id, alt_ok, not terminated))

    def settle_run(self, slots: int) -> None:
        """Classify the failing lines before a trusted one.

        *slots* of them took the place of records the chain misses
        (modified); the others are extra lines: torn when they are broken
        fragments (preferred, as a crash leaves them), inserted otherwise.
        """
        run, beyond = self.run, self.run_extra
        self.run, self.run_extra = [], 0
        extras = max(0, len(run) - slots)
        is_extra = [False] * len(run)
        for i, entry in enumerate(run):
            if extras and entry.form == "garbage":
                is_extra[i] = True
                extras -= 1
        for i in range(len(run) - 1, -1, -1):
            if extras and not is_extra[i]:
                is_extra[i] = True
                extras -= 1
        for entry, extra in zip(run, is_extra, strict=True):
            if not extra:
                self.add(entry.file, entry.line, "modified", _modified_message(entry))
            elif entry.form == "garbage":
                self.add(
                    entry.file,
                    entry.line,
                    "torn",
                    "an incomplete record (a crash mid-write); the chain goes on "
                    "after it",
                )
            else:
                self.add(
                    entry.file,
                    entry.line,
                    "inserted",
                    "this line is not part of the chain (the records around it "
                    "link to each other): " + _why(entry),
                )
        if beyond:
            last = run[-1]
            self.add(
                last.file,
                last.line,
                "modified",
                f"{beyond} more lines after this one fail verification",
            )

    # -- the end ---------------------------------------------------------------

    def finish(self) -> VerifyResult:
        if self.run:
            self.finish_run()
        for gap in self.gaps:
            self.report_gap(gap)
        self.check_start()
        self.check_head()
        if self.seq is None and not self.findings and self.records == 0:
            file = self.last_line[0]
            if self.files:
                self.add(file, 0, "unchained", "the trail holds no records")
        self.findings.sort(key=lambda item: (item[0], item[1], item[2]))
        head = None
        if self.seq is not None:
            head = {
                "file": str(self.files[self.head_at[0]].path),
                "count": self.seq,
                "head": self.head.decode(),
            }
            line = self.head_line.rstrip(b"\r\n")
            key_id = _key_id(line, line.rfind(_SEQ_MEMBER, 0, len(line) - 149))
            if key_id is not None:
                head["key_id"] = key_id
        return VerifyResult(
            findings=tuple(item[3] for item in self.findings),
            files=tuple(str(f.path) for f in self.files),
            records=self.records,
            head=head,
        )

    def finish_run(self) -> None:
        run = self.run
        last_file, last_line = self.last_line
        tail = run[-1]
        torn = (
            tail.unterminated
            and tail.form != "chain"
            and (tail.file, tail.line) == (last_file, last_line)
        )
        if torn:
            run.pop()
            self.add(
                tail.file,
                tail.line,
                "torn",
                "the last line is incomplete (a crash mid-write)",
            )
        if not run:
            return
        first = run[0]
        count = len(run) + self.run_extra
        if self.seq is None:
            if all(entry.form != "chain" for entry in run):
                damaged = sum(entry.form == "garbage" for entry in run)
                also = (
                    f" ({damaged} of these lines are not JSON records)"
                    if damaged
                    else ""
                )
                self.add(
                    first.file,
                    first.line,
                    "unchained",
                    f"{count} records carry no integrity chain (seq/prev/hash)"
                    f"{also}: was the FileSink created with chain=True?",
                )
            else:
                self.add(first.file, first.line, "wrong_key", self.wrong_key(first))
            return
        keys = self.keys
        if isinstance(keys, dict) and all(
            entry.form == "chain" and entry.key_id not in keys for entry in run
        ):
            self.add(first.file, first.line, "wrong_key", self.wrong_key(first))
            return
        if count == 1:
            self.add(first.file, first.line, "modified", _modified_message(first))
            return
        rewritten = all(entry.alt_ok for entry in run)
        how = (
            "; they carry valid plain SHA-256 hashes: rewritten by someone "
            "without the key"
            if rewritten
            else ""
        )
        self.add(
            first.file,
            first.line,
            "modified",
            f"this record and the {count - 1} after it, to the end of the "
            f"trail, fail verification{how}",
        )

    def wrong_key(self, first: _Failed) -> str:
        if self.keys is None:
            return (
                "no record verifies as plain SHA-256: the trail is keyed "
                f"(key_id {first.key_id!r}); pass key="
                if first.key_id
                else "no record verifies as plain SHA-256: the trail is keyed; "
                "pass key="
            )
        if first.alt_ok:
            return (
                "no record verifies with this key, but they verify as plain "
                "SHA-256: the trail was written without a key (or rewritten)"
            )
        if isinstance(self.keys, dict) and first.key_id not in self.keys:
            return f"no key given for key_id {first.key_id!r}"
        label = f" (records name key_id {first.key_id!r})" if first.key_id else ""
        return f"no record verifies with this key{label}"

    def report_gap(self, gap: _Gap) -> None:
        count = gap.hi - gap.lo + 1
        seqs = f"seq {gap.lo}" if count == 1 else f"seq {gap.lo}..{gap.hi}"
        plural = "record is" if count == 1 else "records are"
        missing, present = self.files_between(gap.prev_file, gap.file)
        # Only a rotated file that is really absent is called missing; one
        # that exists but holds none of the records was emptied or replaced.
        held = ""
        if present:
            verb = "exists" if len(present) == 1 else "exist"
            held = (
                f"{', '.join(present)} {verb} but hold"
                f"{'s' if len(present) == 1 else ''} none of them "
                "(emptied, or replaced by other records)"
            )
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            self.add(
                gap.file,
                gap.line,
                "missing_file",
                f"{count} {plural} missing before this line ({seqs}): "
                f"{', '.join(missing)} {verb} missing" + (f"; {held}" if held else ""),
            )
            return
        self.add(
            gap.file,
            gap.line,
            "deleted",
            f"{count} {plural} missing before this line ({seqs})"
            + (f": {held}" if held else ""),
        )

    def files_between(self, older: int, newer: int) -> tuple[list[str], list[str]]:
        """Rotated files numbered between two files of one trail.

        Returns:
            ``(missing, present)``: the names that would hold the records
            between *older* and *newer* and do not exist, and the files
            checked that lie between them (which then hold none of them).
        """
        if older == newer:
            return [], []
        a, b = self.files[older], self.files[newer]
        if a.base != b.base or a.number - b.number <= 1:
            return [], []
        have = {f.number: str(f.path) for f in self.files if f.base == a.base}
        suffix = ".gz" if a.path.suffix == ".gz" else ""
        missing: list[str] = []
        present: list[str] = []
        for n in range(a.number - 1, b.number, -1):
            if n in have:
                present.append(have[n])
            else:
                missing.append(f"{a.base}.{n}{suffix}")
        return missing, present

    def retained_before(self, seq: int) -> bool:
        """Whether recorded retention removed *seq*: it lies before the
        trail's start, and an ``auditloop.retention`` record excuses that
        start."""
        if self.start is None:
            return False
        start = self.start[0]
        return seq < start and start in self.retained_from

    def check_start(self) -> None:
        if self.start is None:
            return
        seq, file, line = self.start
        if seq <= 1 or seq in self.retained_from:
            return
        kind = "missing_file" if line == 1 else "deleted"
        self.add(
            file,
            line,
            kind,
            f"the trail starts at seq {seq}: records 1..{seq - 1} are missing "
            "(deleted rotated files?) and no auditloop.retention record "
            "accounts for them",
        )

    def check_head(self) -> None:
        if self.expected is None:
            return
        count, head = self.expected
        seen = self.expected_seen
        if seen is not None:
            file, line, match = seen
            if not match:
                self.add(
                    file,
                    line,
                    "head_mismatch",
                    f"seq {count} has a different hash than the expected head "
                    f"{head.decode()[:16]}…: the trail was rewritten",
                )
            return
        file, line = self.last_line
        last = self.seq if self.seq is not None else 0
        if count is not None and self.retained_before(count):
            # The anchor's record was deleted by recorded retention: the trail
            # it anchored still verifies from where retention says it starts.
            return
        if count is not None and count <= last:
            self.add(
                file,
                line + 1,
                "head_mismatch",
                f"the expected head (seq {count}) could not be verified",
            )
            return
        missing = f"{count - last} records" if count is not None else "records"
        self.add(
            file,
            line + 1,
            "truncated",
            f"the trail ends at seq {last}, before the expected head "
            f"{head.decode()[:16]}…: {missing} are missing from the end",
        )


def _key_id(line: bytes, seq_start: int) -> str | None:
    if seq_start <= 0 or line[seq_start - 1] != 0x22:
        return None
    start = line.rfind(_KEY_ID_MEMBER, 0, seq_start)
    if start < 0:
        return None
    try:
        return line[start + 11 : seq_start - 1].decode()
    except UnicodeDecodeError:
        return None


def _why(entry: _Failed) -> str:
    if entry.form == "chain":
        return "its hash does not verify (forged, or written with another key)"
    if entry.form == "json":
        return "it carries no chain fields"
    return "it is not a JSON record"


def _modified_message(entry: _Failed) -> str:
    if entry.form == "chain":
        extra = (
            " (it carries a valid plain SHA-256 hash: recomputed without the key)"
            if entry.alt_ok
            else ""
        )
        return f"the record's hash does not match its content{extra}"
    if entry.form == "json":
        return "the record lost its chain fields"
    return "the record is damaged (not a JSON record)"


def verify(
    paths: PathArg | Iterable[PathArg],
    *,
    key: bytes | str | Mapping[str, bytes | str] | None = None,
    expected_head: object = None,
) -> VerifyResult:
    """Check an integrity-chained audit trail for tampering.

    Files are read in trail order: each path's rotated siblings (``x.N``,
    ``x.N.gz``) are included, highest number (oldest) first. Every record's
    hash is recomputed and its ``seq``/``prev`` compared with the record
    before it. Findings name the file and 1-based line: ``modified``,
    ``deleted`` (a gap in ``seq``), ``inserted``, ``reordered``,
    ``missing_file`` (a gap where a rotated file should be, or a trail that
    starts after seq 1 without an ``auditloop.retention`` record saying
    why), ``truncated`` (the trail ends before *expected_head*),
    ``wrong_key``, ``torn`` (a line left incomplete by a crash),
    ``broken_link``, ``head_mismatch``, ``unchained`` and ``unreadable``.

    Blocking (reads every file once, at a few hundred thousand records per
    second); thread-safe; never modifies the files.

    Args:
        paths: a file or files (``.gz`` decompressed).
        key: the chain's HMAC key (bytes or str), a mapping from ``key_id``
            to key (for trails written across a key rotation), or None for
            a plain SHA-256 chain.
        expected_head: an anchor kept elsewhere: a head hash, a
            :func:`chain_head` result, or an ``auditloop.checkpoint`` event
            (dict or :class:`~auditloop.AuditEvent`). Without one, records
            removed from the end of the newest file cannot be detected.

    Returns:
        A :class:`VerifyResult`; ``result.ok`` is True when nothing was found.

    Raises:
        ConfigurationError: an invalid *key* or *expected_head*.
    """
    verifier = _Verifier(_check_keys(key), _check_expected(expected_head))
    verifier.files = _expand(paths)
    if not verifier.files:
        raise ConfigurationError("verify: no files given")
    for index in range(len(verifier.files)):
        verifier.check_file(index)
    return verifier.finish()


def chain_head(path: PathArg) -> dict[str, Any] | None:
    """Return the head of the chain in *path* (or its newest rotated file).

    The result, ``{"file", "count", "head"}`` (plus ``"key_id"``), is what
    to store somewhere else as an anchor and later pass to
    :func:`verify` as ``expected_head``: then removing records from the end
    of the trail is detected too. The last complete chained line is used
    (a torn line is skipped); the hash is not checked here (that is
    :func:`verify`'s job). Blocking; reads at most the file's tail.

    Returns:
        The head, or None when no chained record exists.
    """
    for entry in reversed(_expand(path)):
        link = last_link(entry.path)
        if link is None:
            continue
        seq, _prev, digest, line = link
        head: dict[str, Any] = {
            "file": str(entry.path),
            "count": seq,
            "head": digest.decode(),
        }
        key_id = _key_id(line, line.rfind(_SEQ_MEMBER, 0, len(line) - 149))
        if key_id is not None:
            head["key_id"] = key_id
        return head
    return None
