"""Declarative rules: load them from TOML, test them, backtest them on a trail.

Run: python examples/rules_toml.py   (writes into a temporary directory)

1. ``rules.load`` reads the rule file (actions by registered name);
2. ``testing.run_rule_tests`` runs rule tests written as data (what
   ``auditloop test-rules`` does);
3. the rules run live on a simulated trail, and ``rules.replay`` finds the
   same alerts in the recorded file (what ``auditloop replay`` does).
"""

import tempfile
from pathlib import Path

import auditloop
from auditloop import rules, sinks
from auditloop.testing import FakeClock, run_rule_tests

RULES = """\
[[rules]]
name = "failed-logins"
kind = "threshold"
at_least = 3
within = "5m"
group_by = ["actor.id"]
then = ["notify"]
[rules.match]
action = "user.login"
outcome = ["failure", "denied"]

[[rules]]
name = "bulk-delete"
kind = "distinct"
field = "target.id"
at_least = 3
within = "10m"
group_by = ["actor.id"]
then = ["notify"]
[rules.match]
action = "document.delete"
"""

TESTS = """\
rule_files = ["rules.toml"]

[[tests]]
name = "three failures in five minutes"
  [[tests.events]]
  action = "user.login"
  actor = "bob"
  outcome = "failure"
  repeat = 3
  every = "1m"
  [[tests.expect]]
  at = "2m"
  firing = [{ rule = "failed-logins", group = { "actor.id" = "bob" } }]
  [[tests.expect]]
  at = "5m"
  resolved = [{ rule = "failed-logins", group = { "actor.id" = "bob" } }]

[[tests]]
name = "deleting one document twice is not bulk"
  [[tests.events]]
  action = "document.delete"
  actor = "carol"
  target = "document:7"
  repeat = 3
  [[tests.expect]]
  at = "1m"
  firing = []
"""

live: list[rules.Alert] = []
rules.register("notify", live.append)

directory = Path(tempfile.mkdtemp(prefix="auditloop-rules-"))
(directory / "rules.toml").write_text(RULES)
(directory / "rules.test.toml").write_text(TESTS)

rule_set = rules.load(directory / "rules.toml")
print([f"{r.kind}:{r.name}" for r in rule_set])

result = run_rule_tests(directory / "rules.test.toml")
print(result.report())

clock = FakeClock()
trail = directory / "audit.jsonl"
auditor = auditloop.configure(
    clock=clock, sinks=[sinks.FileSink(trail)], rules=rule_set
)
assert auditor.rules is not None
for action, actor, target, outcome in [
    ("user.login", "bob", None, "failure"),
    ("document.delete", "carol", "document:1", "success"),
    ("user.login", "bob", None, "failure"),
    ("document.delete", "carol", "document:2", "success"),
    ("user.login", "bob", None, "denied"),
    ("document.delete", "carol", "document:3", "success"),
]:
    auditloop.emit(action, actor=actor, target=target, outcome=outcome)
    clock.advance(60)
    auditor.rules.tick()  # what the production ticker does every second
auditloop.shutdown()

replayed = rules.replay(
    auditloop.read_events(trail), rules.load(directory / "rules.toml")
)
for transition in replayed:
    print("replay:", transition.to_dict())
assert [(a.rule, a.status, a.time) for a in live] == [
    (t.rule, t.status, t.time) for t in replayed
]
print(f"live and replay agree on {len(replayed)} transitions; files in {directory}")
