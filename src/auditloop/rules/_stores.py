"""Several stores behind one: rules that keep their state in their own store.

A rule built with ``store=`` keeps its per-group state there instead of in
the engine's store. When the rules of an engine use more than one store, the
engine talks to a :class:`StoreSet`, which implements the
:class:`~auditloop.rules.Store` protocol over them: each store is bound once
with all of its rules, and sees only their events. The engine builds one
only when it is needed, so an engine whose rules all use one store calls
that store directly, exactly as before.

Cost per event: the observers are the member stores' own (the set adds no
call per rule), plus one :meth:`StoreSet.commit` call that asks each member
with a ``commit`` method to apply its queued updates — so an event costs one
round trip per distinct server-backed store among the rules it matched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from auditloop.exceptions import ConfigurationError
from auditloop.rules._kinds import Rule
from auditloop.rules._redis import RedisStore
from auditloop.rules._store import Batch, Change, Observer, Store

if TYPE_CHECKING:
    from auditloop.rules._engine import RuleEngine

__all__ = ["StoreSet", "stores_of"]

_INF: Final = math.inf


def stores_of(rules: Sequence[Rule], default: Store) -> list[tuple[Store, list[int]]]:
    """Partition *rules* by store: each distinct store with its rules' indexes.

    A rule without its own store uses *default*. Stores are told apart by
    identity (one object given to several rules, or to a rule and
    ``configure(rule_store=...)``, is one store), in order of first use.

    Raises:
        ConfigurationError: when two distinct :class:`RedisStore` objects
            share a prefix (each would take the other's due re-checks and
            drop them as foreign: give those rules one store object).
    """
    found: dict[int, tuple[Store, list[int]]] = {}
    for index, rule in enumerate(rules):
        store = default if rule.store is None else rule.store
        found.setdefault(id(store), (store, []))[1].append(index)
    groups = list(found.values())
    _check_prefixes(rules, groups)
    return groups


def _check_prefixes(
    rules: Sequence[Rule], groups: list[tuple[Store, list[int]]]
) -> None:
    seen: dict[tuple[object, ...], str] = {}
    for store, indexes in groups:
        if not isinstance(store, RedisStore):
            continue
        name = rules[indexes[0]].name
        other = seen.setdefault((store.prefix, *store._server), name)
        if other != name:
            raise ConfigurationError(
                f"rule {name!r}: store: another RedisStore with prefix "
                f"{store.prefix!r} holds rule {other!r}; give both rules the same "
                f"store object (one round trip per event) or different prefixes"
            )


class _Member:
    """One store of a :class:`StoreSet`, with its optional hooks looked up once."""

    __slots__ = ("batch", "commit", "store")

    def __init__(self, store: Store) -> None:
        self.store = store
        self.commit: Callable[[], list[Change]] | None = getattr(store, "commit", None)
        self.batch: Callable[[Sequence[Observer]], Batch | None] | None = getattr(
            store, "batch", None
        )


class StoreSet:
    """A :class:`~auditloop.rules.Store` over several stores, one per rule set.

    Not thread-safe on its own (the engine serialises calls, as for any
    store). Every member is bound exactly once, with all the rules whose
    state it holds, so a batching store keeps its one round trip per event
    for all of them.

    Args:
        default: the store of the rules without their own ``store=``.
    """

    def __init__(self, default: Store) -> None:
        self.default = default
        self.next_due = -_INF
        self._members: tuple[_Member, ...] = ()
        self._commits: tuple[Callable[[], list[Change]], ...] = ()
        #: The member (by index) that built each observer, for batch().
        self._owner: dict[Observer, int] = {}
        self._engine: RuleEngine | None = None

    def bind(self, rules: Sequence[Rule]) -> list[Observer]:
        """Bind each member store to its rules; return the observers in order.

        Raises:
            ConfigurationError: when a store returns the wrong number of
                observers, or for RedisStores sharing a prefix.
        """
        observers: list[Observer | None] = [None] * len(rules)
        members = []
        self._owner = {}
        for number, (store, indexes) in enumerate(stores_of(rules, self.default)):
            bound = list(store.bind([rules[i] for i in indexes]))
            if len(bound) != len(indexes):
                raise ConfigurationError(
                    f"configure: {store!r}.bind() returned {len(bound)} observers "
                    f"for {len(indexes)} rules"
                )
            for index, observer in zip(indexes, bound, strict=True):
                observers[index] = observer
                # -1: the same observer object from two stores (batch() then
                # never delegates for it).
                owner = self._owner.setdefault(observer, number)
                if owner != number:
                    self._owner[observer] = -1
            members.append(_Member(store))
        self._members = tuple(members)
        self._commits = tuple(m.commit for m in members if m.commit is not None)
        self._refresh()
        return [observer for observer in observers if observer is not None]

    def _refresh(self) -> None:
        """Recompute :attr:`next_due` from the members'."""
        self.next_due = min((m.store.next_due for m in self._members), default=_INF)

    def advance(self, now: float) -> list[Change]:
        """Advance the members that are due; their transitions in time order."""
        changes: list[Change] = []
        sources = 0
        for member in self._members:
            store = member.store
            if now >= store.next_due:
                try:
                    found = store.advance(now)
                except Exception:  # only this member's changes are lost
                    self._failed()
                    continue
                if found:
                    changes += found
                    sources += 1
        self._refresh()
        if sources > 1:
            changes.sort(key=lambda change: change.at)  # stable per store
        return changes

    def commit(self) -> list[Change]:
        """Commit every member that batches; refresh :attr:`next_due`.

        The engine calls it once per event after the observers (which may
        have moved a member's deadline earlier) and after every tick's
        :meth:`advance`, so :attr:`next_due` is current whenever it is read.
        """
        changes: list[Change] = []
        for commit in self._commits:
            try:
                found = commit()
            except Exception:  # only this member's changes are lost
                self._failed()
                continue
            if found:
                changes += found
        self._refresh()
        return changes

    def _failed(self) -> None:
        """Count a member store that raised (stores should never raise)."""
        engine = self._engine
        if engine is not None:
            engine._counters.incr("internal_errors")

    def batch(self, observers: Sequence[Observer]) -> Batch | None:
        """The batch function of the one member all *observers* belong to.

        ``None`` when they belong to several members or that member cannot
        batch them (see :class:`~auditloop.rules.Store`).
        """
        owners = {self._owner.get(observer, -1) for observer in observers}
        if len(owners) != 1:
            return None
        (owner,) = owners
        if owner < 0:
            return None
        batch = self._members[owner].batch
        return None if batch is None else batch(observers)

    def attach(self, engine: RuleEngine) -> None:
        """Give the engine to every member that wants it; a member that
        raises in :meth:`advance` or :meth:`commit` is counted in the
        engine's ``internal_errors``."""
        self._engine = engine
        for member in self._members:
            attach = getattr(member.store, "attach", None)
            if attach is not None:
                attach(engine)

    def stats(self) -> dict[str, dict[str, int]]:
        """Every member's counters per rule name (names are unique)."""
        merged: dict[str, dict[str, int]] = {}
        for member in self._members:
            merged.update(member.store.stats())
        return merged
