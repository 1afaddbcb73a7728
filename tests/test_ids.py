"""Run ids become folder names and partition keys: only safe identifiers pass."""

import pytest

from aero_assets.ids import InvalidIdentifier, validate_id


@pytest.mark.parametrize("ok", ["run-001", "wt-20261123-120000-run001", "A.b_c-9", "x" * 128])
def test_safe_identifiers_pass(ok):
    assert validate_id(ok) == ok


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("", "empty"),
        ("../etc", r"\.\."),
        ("a/b", "separator"),
        ("a\\b", "separator"),
        ("run\n1", "control"),
        ("run\x00", "control"),
        (".hidden", "not allowed"),
        ("x" * 129, "not allowed"),
        ("run 1", "not allowed"),
        (42, "string"),
    ],
)
def test_unsafe_identifiers_are_rejected_with_the_reason(bad, why):
    with pytest.raises(InvalidIdentifier, match=why):
        validate_id(bad)
