"""Declarative rules: TOML files or dicts into the same rule classes.

::

    [[rules]]
    name = "permission-storm"
    kind = "threshold"        # threshold | ratio | distinct | absence | sequence
    at_least = 5
    within = "10m"
    group_by = ["actor.id"]
    then = ["myapp.alerts:page_security"]
    [rules.match]
    action = "permission.*"

Other kinds use the same keys as their Python parameters; a sequence's steps
are ``[[rules.steps]]`` tables and a ratio's denominator an ``[rules.of]``
table, with the same keys as ``[rules.match]``.
"""

from __future__ import annotations

import difflib
import importlib
import os
import threading
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from auditloop.exceptions import RuleError
from auditloop.rules._kinds import Absence, Distinct, Ratio, Rule, Sequence, Threshold
from auditloop.rules._match import Match, match
from auditloop.rules._store import Store

__all__ = ["load", "load_rule_list", "register", "resolve_callable"]

_KINDS: Final[dict[str, type[Rule]]] = {
    "threshold": Threshold,
    "ratio": Ratio,
    "distinct": Distinct,
    "absence": Absence,
    "sequence": Sequence,
}
_COMMON: Final = frozenset(
    {
        "name",
        "kind",
        "group_by",
        "within",
        "then",
        "on_resolve",
        "for_",
        "cooldown",
        "severity",
        "labels",
        "max_groups",
        "evidence",
        "store",
    }
)
_KEYS: Final[dict[str, frozenset[str]]] = {
    "threshold": _COMMON | {"match", "at_least"},
    "ratio": _COMMON | {"match", "of", "above", "min_count", "max_events"},
    "distinct": _COMMON | {"match", "field", "at_least"},
    "absence": _COMMON | {"match", "expected"},
    "sequence": _COMMON | {"steps"},
}
_MATCH_KEYS: Final = (
    "action",
    "category",
    "outcome",
    "actor",
    "target",
    "severity",
    "where",
)

_registry: dict[str, Callable[..., Any]] = {}
_registry_lock = threading.Lock()


def register(name: str, action: Callable[..., Any]) -> Callable[..., Any]:
    """Make *action* available to TOML rules as ``then = ["<name>"]``.

    Also usable for ``where`` callables in ``[rules.match]``. Registering a
    name again replaces it. Thread-safe.

    Returns:
        *action*, unchanged.

    Raises:
        RuleError: when *name* is empty or *action* is not callable.
    """
    if not isinstance(name, str) or not name:
        raise RuleError(f"register: name must be a non-empty string, got {name!r}")
    if not callable(action):
        raise RuleError(f"register: {name!r}: {action!r} is not callable")
    with _registry_lock:
        _registry[name] = action
    return action


def resolve_callable(reference: str) -> Callable[..., Any]:
    """Find a registered name, ``"pkg.module:attr"`` or ``"pkg.module.attr"``.

    Raises:
        RuleError: naming the reference and why it cannot be used.
    """
    with _registry_lock:
        found = _registry.get(reference)
    if found is not None:
        return found
    if ":" in reference:
        module_name, _, attr_path = reference.partition(":")
    else:
        module_name, _, attr_path = reference.rpartition(".")
    if not module_name or not attr_path:
        raise RuleError(
            f"{reference!r} is neither a registered name (rules.register) "
            f"nor an import path like 'package.module:function'"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise RuleError(
            f"{reference!r}: cannot import {module_name!r}: {exc}"
        ) from None
    except Exception as exc:  # the module itself failed while importing
        raise RuleError(
            f"{reference!r}: importing {module_name!r} raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise RuleError(
                f"{reference!r}: {module_name!r} has no {attr_path!r}"
            ) from None
        except Exception as exc:  # e.g. a module __getattr__ that raises
            raise RuleError(
                f"{reference!r}: reading {attr_path!r} of {module_name!r} raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    if not callable(target):
        raise RuleError(f"{reference!r} is not callable")
    return target  # type: ignore[no-any-return]


def load(
    source: str | os.PathLike[str] | Mapping[str, Any], *, actions: bool = True
) -> list[Rule]:
    """Read rules from a TOML file, or from a dict of the same shape.

    The dict form is what ``tomllib`` returns: ``{"rules": [{...}, ...]}``.
    Actions (``then``, ``on_resolve``) and ``where`` are names registered
    with :func:`register` or import paths, resolved now. A rule's ``store``
    cannot be written in TOML; in the dict form it may hold a
    :class:`~auditloop.rules.Store` object.

    Args:
        source: a TOML file path, or the equivalent dict.
        actions: ``False`` leaves ``then``/``on_resolve`` out (their form is
            still checked) — for replays and rule tests, where no action
            runs and the application's callables may not be importable.

    Returns:
        The rule objects, in file order.

    Raises:
        RuleError: for a file that cannot be read or parsed and for any
            invalid rule; the message names the rule, the field and the
            reason.
    """
    if isinstance(source, Mapping):
        data: Mapping[str, Any] = source
        origin = "rules"
    else:
        path = Path(source)
        origin = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise RuleError(f"{origin}: cannot read: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise RuleError(f"{origin}: not valid TOML: {exc}") from None
    unknown = set(data) - {"rules"}
    if unknown:
        raise RuleError(
            f"{origin}: unknown top-level key {sorted(unknown)[0]!r} "
            f"(expected [[rules]])"
        )
    return load_rule_list(data.get("rules", []), origin, actions=actions)


def load_rule_list(items: object, origin: str, *, actions: bool = True) -> list[Rule]:
    """Build rules from a list of rule tables (shared with the test runner).

    Raises:
        RuleError: as :func:`load`.
    """
    if not isinstance(items, list):
        raise RuleError(f"{origin}: 'rules' must be an array of tables ([[rules]])")
    result: list[Rule] = []
    names: set[str] = set()
    for index, item in enumerate(items):
        rule = _build(item, f"{origin}: rules[{index}]", actions=actions)
        if rule.name in names:
            raise RuleError(f"rule {rule.name!r}: name: used by more than one rule")
        names.add(rule.name)
        result.append(rule)
    return result


def _build(item: object, where: str, *, actions: bool) -> Rule:
    if not isinstance(item, Mapping):
        raise RuleError(f"{where}: a rule must be a table, got {item!r}")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RuleError(f"{where}: name: required, a non-empty string (got {name!r})")
    label = f"rule {name!r}"
    kind = item.get("kind")
    if not isinstance(kind, str):
        raise RuleError(
            f"{label}: kind: must be a string, one of {', '.join(_KINDS)} "
            f"(got {kind!r})"
        )
    if kind not in _KINDS:
        close = difflib.get_close_matches(str(kind), list(_KINDS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RuleError(
            f"{label}: kind: unknown kind {kind!r} "
            f"(use one of {', '.join(_KINDS)}){hint}"
        )
    allowed = _KEYS[kind]
    for key in item:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RuleError(f"{label}: {key}: not an option of a {kind} rule{hint}")
    options: dict[str, Any] = {
        k: v for k, v in item.items() if k not in {"name", "kind"}
    }
    for field in ("match", "of"):
        if field in options:
            options[field] = _match(label, field, options[field])
    if "steps" in options:
        steps = options["steps"]
        if not isinstance(steps, list):
            raise RuleError(
                f"{label}: steps: must be an array of tables ([[rules.steps]])"
            )
        options["steps"] = [
            _match(label, f"steps[{i}]", s) for i, s in enumerate(steps)
        ]
    for field in ("then", "on_resolve"):
        if field in options:
            resolved = _actions(label, field, options[field], resolve=actions)
            if actions:
                options[field] = resolved
            else:
                del options[field]
    if "store" in options:
        _check_store(label, options["store"])
    for field in sorted(allowed - {"name", "kind", "expected", "labels", "store"}):
        if field not in options and _required(kind, field):
            raise RuleError(f"{label}: {field}: required for a {kind} rule")
    factory: Callable[..., Rule] = _KINDS[kind]
    return factory(name, **options)


def _check_store(label: str, value: object) -> None:
    """A store is a Python object: only the dict form from Python can hold one."""
    if not isinstance(value, Store):
        raise RuleError(
            f"{label}: store: cannot be set in a rule file (a store is a Python "
            f"object): build the rule in Python with store=..., or use "
            f"configure(rule_store=...); got {value!r}"
        )


def _required(kind: str, field: str) -> bool:
    import inspect

    parameter = inspect.signature(_KINDS[kind]).parameters.get(field)
    return parameter is not None and parameter.default is inspect.Parameter.empty


def _match(label: str, field: str, table: object) -> Match:
    if not isinstance(table, Mapping):
        raise RuleError(
            f"{label}: {field}: must be a table like [rules.{field}] with action = ..."
        )
    criteria: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _MATCH_KEYS:
            close = difflib.get_close_matches(key, _MATCH_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RuleError(f"{label}: {field}.{key}: not a match criterion{hint}")
        if key == "where":
            if not isinstance(value, str):
                raise RuleError(
                    f"{label}: {field}.where: must name a registered callable"
                )
            try:
                criteria["where"] = resolve_callable(value)
            except RuleError as exc:
                raise RuleError(f"{label}: {field}.where: {exc}") from None
        else:
            criteria[key] = tuple(value) if isinstance(value, list) else value
    try:
        return match(**criteria)
    except RuleError as exc:
        raise RuleError(
            f"{label}: {field}: {str(exc).removeprefix('match: ')}"
        ) from None


def _actions(
    label: str, field: str, value: object, *, resolve: bool
) -> list[Callable[..., Any]]:
    references = [value] if isinstance(value, str) else value
    if not isinstance(references, list) or not all(
        isinstance(r, str) for r in references
    ):
        raise RuleError(f"{label}: {field}: must be a list of names or import paths")
    if not resolve:
        return []
    actions = []
    for reference in references:
        try:
            actions.append(resolve_callable(reference))
        except RuleError as exc:
            raise RuleError(f"{label}: {field}: {exc}") from None
    return actions
