"""``auditloop verify``: check a chained trail's integrity (``auditloop.verify``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from auditloop._cli._common import (
    EXIT_FINDINGS,
    EXIT_OK,
    CLIError,
    HelpFormatter,
    expand_paths,
)
from auditloop._cli._format import dumps_safe, short

__all__ = [
    "Finding",
    "Verdict",
    "check_integrity",
    "read_key",
    "read_key_forms",
    "register",
    "run",
]

EXAMPLES = """\
examples:
  auditloop verify audit.jsonl --key-file audit.key
  auditloop verify audit.jsonl* --key-file audit.key --json
  auditloop verify audit.jsonl --key-file audit.key --expected-head 9f2c...e1

exit status: 0 when the chain is intact, 1 on any finding, 2 on bad input.
"""


def register(commands: Any) -> None:
    """Add the ``verify`` subcommand to the *commands* subparsers."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "verify",
        help="check the integrity chain of audit files (exit 1 on any finding)",
        description="Verify the hash chain of audit files written with "
        "FileSink(chain=True): every record's seq, prev and HMAC hash. Rotated "
        "files are checked in order, oldest first. Prints each finding as "
        "file:line: kind: message.",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="JSON-lines audit file"
    )
    parser.add_argument(
        "--key-file",
        metavar="K",
        help="file holding the HMAC key: its bytes, less one trailing newline "
        "(\\n or \\r\\n) if there is one; should the key not verify that way, "
        "the file's exact bytes are tried too",
    )
    parser.add_argument(
        "--expected-head",
        metavar="HASH",
        help="the hash the last record must have (detects a truncated tail)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def read_key(name: str) -> bytes:
    """Return the key stored in file *name*, less one trailing newline.

    At most one ``\\n`` or ``\\r\\n`` is removed (what ``echo`` or an editor
    adds to a text key); any other byte, including more line breaks, is part
    of the key. Use :func:`read_key_forms` to also get the exact bytes.

    Raises:
        CLIError: when the file cannot be read or is empty.
    """
    return read_key_forms(name)[0]


def read_key_forms(name: str) -> tuple[bytes, ...]:
    """Return the ways to read the key in file *name*, most likely first.

    A raw binary key may itself end in a newline byte, so when the file
    ends with one the exact bytes follow the key without it.

    Raises:
        CLIError: when the file cannot be read or is empty.
    """
    try:
        data = Path(name).read_bytes()
    except OSError as exc:
        raise CLIError(f"{name}: cannot read key file: {exc.strerror or exc}") from None
    if data.endswith(b"\r\n"):
        key = data[:-2]
    elif data.endswith(b"\n"):
        key = data[:-1]
    else:
        key = data
    if not key:
        raise CLIError(f"{name}: the key file is empty")
    return (key, data) if key != data else (key,)


class Finding:
    """One integrity problem: where, what kind, and a message."""

    __slots__ = ("file", "kind", "line", "message")

    def __init__(self, file: str, line: int, kind: str, message: str) -> None:
        self.file, self.line, self.kind, self.message = file, line, kind, message

    def to_dict(self) -> dict[str, Any]:
        """The finding as a JSON-ready dict."""
        return {
            "file": self.file,
            "line": self.line,
            "kind": self.kind,
            "message": self.message,
        }


class Verdict:
    """What the report and ``verify`` say about a trail's integrity.

    ``status`` is ``"ok"``, ``"failed"``, ``"unchained"`` (no chain to
    check) or ``"needs_key"`` (a keyed chain, no key given).
    """

    def __init__(
        self,
        status: str,
        headline: str,
        label: str,
        findings: Sequence[Finding] = (),
        details: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.headline = headline
        self.label = label
        self.findings = list(findings)
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        """The verdict as a JSON-ready dict."""
        return {
            "ok": self.status == "ok",
            "status": self.status,
            "summary": self.headline,
            **self.details,
            "findings": [f.to_dict() for f in self.findings],
        }


def check_integrity(
    paths: Sequence[Path],
    key: bytes | None,
    expected_head: str | None = None,
    *,
    other_keys: Sequence[bytes] = (),
) -> Verdict:
    """Verify the chain of *paths* and turn the result into a Verdict.

    Besides ``"ok"`` and ``"failed"``, the status is ``"unchained"`` when
    no record carries a chain and ``"needs_key"`` when the chain is keyed
    but no key was given: neither is evidence of tampering. Every finding
    is kept, whatever the status. Blocking: reads every file once (once
    more per key in *other_keys* tried).

    Args:
        paths: the files, in trail order.
        key: the HMAC key, or None.
        expected_head: a head hash kept elsewhere, or None.
        other_keys: other readings of the key (see :func:`read_key_forms`),
            tried in order while the result is ``wrong_key``.

    Raises:
        CLIError: for an invalid *expected_head*.
    """
    from auditloop._verify import verify as verify_trail
    from auditloop.exceptions import ConfigurationError

    names = [str(p) for p in paths]
    try:
        result = verify_trail(names, key=key, expected_head=expected_head)
        for other in other_keys:
            if not any(f.kind == "wrong_key" for f in result.findings):
                break
            retry = verify_trail(names, key=other, expected_head=expected_head)
            if not any(f.kind == "wrong_key" for f in retry.findings):
                result = retry
    except ConfigurationError as exc:
        raise CLIError(str(exc)) from None
    findings = [
        Finding(str(f.file), int(f.line), str(f.kind), str(f.message))
        for f in result.findings
    ]
    details = {k: v for k, v in result.to_dict().items() if k not in ("ok", "findings")}
    kinds = {f.kind for f in findings}
    if result.ok:
        records = details.get("records", 0)
        return Verdict(
            "ok",
            f"Chain intact: all {records} records verified.",
            "intact",
            (),
            details,
        )
    keyless = key is None and kinds == {"wrong_key"}
    # Judged from the whole trail: a chain that starts late (chain=True
    # turned on later) is still a chain, and its findings are shown.
    if result.head is None and "unchained" in kinds:
        return Verdict(
            "unchained",
            "Not chained: the records carry no integrity chain "
            "(FileSink(chain=True) adds one), so tampering cannot be detected.",
            "not chained",
            findings,
            details,
        )
    if keyless:
        return Verdict(
            "needs_key",
            "Not verified: the chain is keyed; pass its key with --key-file.",
            "key needed",
            findings,
            details,
        )
    noun = "finding" if len(findings) == 1 else "findings"
    return Verdict(
        "failed",
        f"Integrity check FAILED: {len(findings)} {noun}.",
        "FAILED",
        findings,
        details,
    )


def run(args: argparse.Namespace) -> int:
    """Run ``verify``.

    Returns:
        0 when intact, 1 on any finding, 2 on bad input.
    """
    paths = expand_paths(args.files)
    keys = read_key_forms(args.key_file) if args.key_file else (None,)
    verdict = check_integrity(paths, keys[0], args.expected_head, other_keys=keys[1:])
    if args.json:
        sys.stdout.buffer.write(dumps_safe(verdict.to_dict()) + b"\n")
    else:
        for finding in verdict.findings:
            print(
                f"{short(finding.file)}:{finding.line}: {short(finding.kind)}: "
                f"{short(finding.message, 500)}"
            )
        print(verdict.headline)
    sys.stdout.flush()
    return EXIT_OK if verdict.status == "ok" else EXIT_FINDINGS
