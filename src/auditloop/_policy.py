"""Audit policy: which events are recorded, and how much of them.

Like Kubernetes audit policy levels: ordered rules, the first match wins,
and its level decides what an event keeps:

- ``none``: the event is not recorded at all;
- ``metadata``: who, what, to what, outcome (no ``attributes``);
- ``request``: plus ``attributes`` (captured arguments), but not the
  return value ``audited(capture=["return"])`` recorded;
- ``full``: everything the code captures (the default).

Decisions are cached per (action, category, actor id), so a configured
policy costs one dict lookup per event; without one the hot path pays a
single ``if``.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from auditloop._selfaudit import current_suspension
from auditloop.exceptions import ConfigurationError

if TYPE_CHECKING:
    from auditloop._auditor import Auditor

__all__ = [
    "LEVELS",
    "SKIP",
    "Level",
    "Policy",
    "PolicyCache",
    "PolicyRule",
    "Skip",
    "gate",
    "load_policy",
]

Level = Literal["none", "metadata", "request", "full"]
#: The levels, from least to most recorded.
LEVELS: Final[tuple[str, ...]] = ("none", "metadata", "request", "full")
_FIELDS: Final = ("action", "category", "actor")
_RULE_KEYS: Final = ("level", *_FIELDS)
_CACHE_LIMIT: Final = 4096
_RETURN: Final = "return"


class Skip:
    """Returned by :func:`gate` for an event that is not recorded."""

    __slots__ = ()


SKIP: Final = Skip()


def _check_level(where: str, level: object) -> Level:
    if level not in LEVELS:
        raise ConfigurationError(
            f"{where}: level must be one of {', '.join(LEVELS)}; got {level!r}"
        )
    return level  # type: ignore[return-value]


def _patterns(where: str, name: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = (value,)
    # A mapping (a TOML table) would give its keys as patterns: refuse it.
    # Other iterables are read once (a generator is used up by reading).
    if isinstance(value, Mapping | bytes | bytearray) or not isinstance(
        value, Iterable
    ):
        raise ConfigurationError(
            f"{where}: {name} must be a glob pattern or a list of them, got {value!r}"
        )
    patterns = tuple(value)
    if not patterns:
        # Left out, a field matches every event: an emptied list must not.
        raise ConfigurationError(
            f"{where}: {name} is an empty list (leave {name} out to match every event)"
        )
    if not all(isinstance(p, str) and p for p in patterns):
        raise ConfigurationError(
            f"{where}: {name} must be a glob pattern or a list of them, got {value!r}"
        )
    if isinstance(value, set | frozenset):
        patterns = tuple(sorted(patterns))  # the same rule, the same to_dict()
    return patterns


def _compile(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


@attrs.frozen(init=False)
class PolicyRule:
    """One policy rule: a level for events matching every given pattern.

    Patterns are shell-style globs (``"permission.*"``, ``"svc-*"``), case
    sensitive; a list matches when any of its patterns does; a field left
    out (``None``) matches everything, an empty list is refused (an emptied
    list must not turn into "match everything"), and so is a mapping.
    ``actor`` matches the actor's id.

    Args:
        level: ``"none"``, ``"metadata"``, ``"request"`` or ``"full"``.
        action: pattern(s) for the event's action.
        category: pattern(s) for its category (an event without one
            matches only a rule without ``category``).
        actor: pattern(s) for its actor id (likewise).

    Raises:
        ConfigurationError: an invalid level or pattern, an empty list or a
            mapping of patterns, naming the field.
    """

    level: Level
    action: tuple[str, ...]
    category: tuple[str, ...]
    actor: tuple[str, ...]
    _matchers: tuple[re.Pattern[str] | None, ...] = attrs.field(repr=False, eq=False)

    def __init__(
        self,
        level: Level,
        *,
        action: str | Iterable[str] | None = None,
        category: str | Iterable[str] | None = None,
        actor: str | Iterable[str] | None = None,
    ) -> None:
        where = "PolicyRule"
        fields = {
            "action": _patterns(where, "action", action),
            "category": _patterns(where, "category", category),
            "actor": _patterns(where, "actor", actor),
        }
        self.__attrs_init__(
            _check_level(where, level),
            fields["action"],
            fields["category"],
            fields["actor"],
            tuple(_compile(fields[name]) for name in _FIELDS),
        )

    def matches(self, action: str, category: str | None, actor_id: str | None) -> bool:
        """Tell whether this rule applies to an event with these fields."""
        for matcher, value in zip(
            self._matchers, (action, category, actor_id), strict=True
        ):
            if matcher is not None and (
                value is None or matcher.fullmatch(value) is None
            ):
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        """The rule in the dict/TOML form :func:`Policy.load` reads."""
        d: dict[str, Any] = {"level": self.level}
        for name in _FIELDS:
            patterns = getattr(self, name)
            if patterns:
                d[name] = patterns[0] if len(patterns) == 1 else list(patterns)
        return d


def _as_rules(rules: Iterable[PolicyRule]) -> tuple[PolicyRule, ...]:
    return tuple(rules)


@attrs.frozen
class Policy:
    """An ordered list of :class:`PolicyRule`; the first match wins.

    Events that match no rule get *default*. Events whose action starts
    with ``auditloop.`` (auditloop's own: configuration changes,
    suspensions, drops, alerts) are always recorded in full: a policy
    cannot hide auditing being changed or switched off.

    Args:
        rules: the rules, in order.
        default: the level for events no rule matches (``"full"``).

    Raises:
        ConfigurationError: an invalid rule or level.
    """

    rules: tuple[PolicyRule, ...] = attrs.field(converter=_as_rules)
    default: Level = "full"

    def __attrs_post_init__(self) -> None:
        _check_level("Policy: default", self.default)
        for i, rule in enumerate(self.rules):
            if not isinstance(rule, PolicyRule):
                raise ConfigurationError(
                    f"Policy: rules[{i}] must be a PolicyRule, got {rule!r}"
                )

    def level_for(
        self, action: str, category: str | None = None, actor: str | None = None
    ) -> Level:
        """Return the level for an event (``actor`` is the actor's id)."""
        if action.startswith("auditloop."):
            return "full"
        for rule in self.rules:
            if rule.matches(action, category, actor):
                return rule.level
        return self.default

    def to_dict(self) -> dict[str, Any]:
        """The policy in the dict/TOML form :meth:`load` reads."""
        return {"default": self.default, "rules": [r.to_dict() for r in self.rules]}

    @classmethod
    def load(cls, source: object) -> Policy:
        """Build a policy from a Policy, a list of rule dicts, a dict or a TOML file.

        A dict has ``rules`` (a list of rule dicts) and optionally
        ``default``. A TOML file holds the same under a ``[policy]`` table::

            [policy]
            default = "full"

            [[policy.rules]]
            level = "none"
            action = ["health.*", "metrics.*"]

            [[policy.rules]]
            level = "metadata"
            actor = "svc-*"

        Raises:
            ConfigurationError: unreadable or non-UTF-8 file, unknown key,
                bad level or pattern, empty pattern list; the message names
                the rule (``policy.rules[1]``) and the field.
        """
        if isinstance(source, Policy):
            return source
        if isinstance(source, str | os.PathLike):
            return cls.load(_read_toml(Path(source)))
        if isinstance(source, Mapping):
            unknown = [k for k in source if k not in ("rules", "default")]
            if unknown:
                raise ConfigurationError(
                    _unknown("policy", unknown[0], ("rules", "default"))
                )
            rules = source.get("rules", [])
            default = _check_level("policy: default", source.get("default", "full"))
            return cls(_rules(rules), default)
        if isinstance(source, Iterable):
            return cls(_rules(source))
        raise ConfigurationError(
            "policy must be a Policy, a list of rule dicts, a dict or a TOML "
            f"file path, got {source!r}"
        )


def _read_toml(path: Path) -> Mapping[str, Any]:
    import tomllib

    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigurationError(f"policy: cannot read {str(path)!r}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"policy: {str(path)!r} is not TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"policy: {str(path)!r} is not UTF-8 text (TOML must be): {exc}"
        ) from None
    table = data.get("policy")
    if not isinstance(table, Mapping):
        raise ConfigurationError(f"policy: {str(path)!r} has no [policy] table")
    return table


def _unknown(where: str, key: object, valid: tuple[str, ...]) -> str:
    import difflib

    close = difflib.get_close_matches(str(key), valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{where}: unknown key {key!r}{hint}"


def _rules(rules: object) -> list[PolicyRule]:
    if isinstance(rules, str | bytes | Mapping) or not isinstance(rules, Iterable):
        # A mapping: ``[policy.rules]`` written for ``[[policy.rules]]``.
        raise ConfigurationError(
            f"policy: rules must be a list of rule tables/dicts, got {rules!r}"
        )
    built: list[PolicyRule] = []
    for i, rule in enumerate(rules):
        where = f"policy.rules[{i}]"
        if isinstance(rule, PolicyRule):
            built.append(rule)
            continue
        if not isinstance(rule, Mapping):
            raise ConfigurationError(f"{where}: must be a table/dict, got {rule!r}")
        for key in rule:
            if key not in _RULE_KEYS:
                raise ConfigurationError(_unknown(where, key, _RULE_KEYS))
        if "level" not in rule:
            raise ConfigurationError(f"{where}: level is missing")
        try:
            built.append(
                PolicyRule(
                    rule["level"],
                    action=rule.get("action"),
                    category=rule.get("category"),
                    actor=rule.get("actor"),
                )
            )
        except ConfigurationError as exc:
            message = str(exc).removeprefix("PolicyRule: ")
            raise ConfigurationError(f"{where}: {message}") from None
    return built


def load_policy(policy: object) -> Policy | None:
    """Validate ``configure(policy=...)`` (None: no policy)."""
    if policy is None:
        return None
    return Policy.load(policy)


class PolicyCache:
    """Per-Auditor memo of policy decisions, bounded."""

    __slots__ = ("_levels", "policy")

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._levels: dict[tuple[str, str | None, str | None], Level] = {}

    def level(self, action: str, category: str | None, actor_id: str | None) -> Level:
        key = (action, category, actor_id)
        level = self._levels.get(key)
        if level is None:
            level = self.policy.level_for(action, category, actor_id)
            if len(self._levels) >= _CACHE_LIMIT:
                self._levels.clear()
            self._levels[key] = level
        return level


def gate(  # noqa: PLR0917 - positional, like the hot path that calls it
    auditor: Auditor,
    method: str,
    action: str,
    category: str | None,
    actor: dict[str, Any] | None,
    attributes: dict[str, Any] | None,
) -> dict[str, Any] | Skip | None:
    """Apply suspension and policy to one event being recorded.

    Returns :data:`SKIP` when the event is not recorded, else the attributes
    it keeps. Called only when a policy is configured or a suspension is
    active somewhere.
    """
    if action.startswith("auditloop."):
        return attributes  # auditloop's own events: never hidden
    suspension = current_suspension()
    if suspension is not None:
        suspension.skipped += 1
        auditor.counters.incr("suspended")
        return SKIP
    cache = auditor.policy_cache
    if cache is None:
        return attributes
    actor_id = actor.get("id") if actor else None
    level = cache.level(action, category, actor_id)
    if level == "full":
        return attributes
    if level == "none":
        auditor.counters.incr("policy_skipped")
        return SKIP
    if level == "metadata" or not attributes:
        return None
    if method == "audited" and _RETURN in attributes:
        return {k: v for k, v in attributes.items() if k != _RETURN}
    return attributes
