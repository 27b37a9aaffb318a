"""The policy language: how a policies/*.policy line becomes a rule."""

import pytest

from spt import policy
from spt.errors import SptError


def test_placeholders_and_arithmetic_are_filled_from_the_facts():
    (rule,) = policy.render("t", "pread64: fd == {fd} && offset <= {capacity} - {sector}  # why",
                            {"fd": 7, "capacity": 4096, "sector": 512})
    assert rule.syscall == "pread64" and rule.reason == "why" and rule.source == "t.policy:1"
    assert [(c.arg, c.index, c.op, c.value) for c in rule.conditions] == [
        ("fd", 0, "==", 7), ("offset", 3, "<=", 3584)]


def test_numbers_are_decimal_or_0x_hex_never_octal():
    rules = policy.render("t", "arch_prctl: code == 0x1002\nwrite: fd == 010\n", {})
    assert [r.conditions[0].value for r in rules] == [0x1002, 10]


@pytest.mark.parametrize("line, message", [
    ("write: fd == {nope}", "unknown placeholder {nope}"),
    ("write: colour == 1", "write has no argument 'colour'"),
    ("write: fd ~ 1", "cannot parse condition"),
    ("write: fd == 1 - 2", "is negative"),
    ("write: fd == one", "cannot evaluate"),
    ("Write!", "cannot parse"),
])
def test_a_bad_policy_line_is_one_clear_error(line, message):
    with pytest.raises(SptError) as exc:
        policy.render("t", line, {})
    assert message in str(exc.value) and "t.policy:1" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_comments_and_blank_lines_make_no_rules():
    assert policy.render("t", "# a comment\n\n   \nexit_group  # always\n", {})[0].conditions == ()
