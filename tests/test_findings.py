"""The one finding type: what the pre-flight, the slider checks and the engine's events share."""

import pytest

from trainer.config import ValidationIssue
from trainer.events import EVENT_FIELDS
from trainer.findings import ERROR, WARNING, Finding, error, errors_of, has_errors, warning, warnings_of


def test_validation_issue_is_the_finding_type():
    assert ValidationIssue is Finding


def test_params_and_hint_are_keyword_only():
    with pytest.raises(TypeError):
        Finding("resolution", ERROR, "resolution_invalid", "bad", {"value": "x"})  # type: ignore[misc]
    found = error("resolution", "resolution_invalid", "bad", hint="use 512", value="x")
    assert found.params == {"value": "x"} and found.hint == "use 512" and found.is_error


def test_an_unknown_level_is_refused():
    with pytest.raises(ValueError, match="level"):
        Finding("x", "fatal", "code", "message")


@pytest.mark.parametrize("make", [error, warning])
def test_event_fields_match_the_event_schema(make):
    found = make("clip_skip", "clip_skip_ignored", "ignored", clip_skip=2)
    fields = found.event_fields()
    assert set(fields) == set(EVENT_FIELDS[found.level])
    assert fields["params"] == {"clip_skip": 2} and fields["field"] == "clip_skip"


def test_filters():
    findings = [error("a", "c1", "m"), warning("b", "c2", "m")]
    assert [f.code for f in errors_of(findings)] == ["c1"]
    assert [f.code for f in warnings_of(findings)] == ["c2"]
    assert has_errors(findings) and not has_errors(warnings_of(findings))
    assert findings[1].level == WARNING
