"""The AWX surveys in awx/surveys: AWX's survey spec format, and answers the roles accept.

Each survey is checked the way AWX checks a survey spec when it is saved (top-level keys, question
keys and types, defaults of the question's type, choices), and each default is fed, as AWX passes
it in extra vars, through the role's own argument spec (meta/argument_specs.yml, the validation
the role runs first) and compared with the role's default, so accepting a survey as it stands
behaves as running the playbook without variables.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.validation import check_type_bool

REPO_ROOT = Path(__file__).resolve().parents[3]
SURVEYS = REPO_ROOT / "awx" / "surveys"
ROLES = ("backup", "migrate", "restore", "verify")

# AWX's question types and the Python type of their default (awx/api/views JobTemplateSurveySpec).
QUESTION_TYPES = {
    "text": str,
    "textarea": str,
    "password": str,
    "multiplechoice": str,
    "multiselect": str,
    "integer": int,
    "float": float,
}
QUESTION_KEYS = {
    "question_name",
    "question_description",
    "variable",
    "type",
    "required",
    "default",
    "choices",
    "min",
    "max",
    "new_question",
}
# Which question types can carry each argument spec type, as AWX passes the answer.
TYPES_FOR = {
    "str": {"text", "textarea", "multiplechoice"},
    "path": {"text", "textarea"},
    "list": {"text", "textarea", "multiselect"},
    "dict": {"text", "textarea"},
    "bool": {"multiplechoice"},
    "int": {"integer"},
    "float": {"float"},
    "raw": {"text", "textarea"},  # verify_command: a string runs with sh -c
}


def load_survey(role):
    return json.loads((SURVEYS / f"{role}.json").read_text())


def role_options(role):
    specs = yaml.safe_load((REPO_ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"]["main"]["options"]


def role_defaults(role):
    return yaml.safe_load((REPO_ROOT / "roles" / role / "defaults" / "main.yml").read_text())


def playbook_variables(role):
    """Variables the playbook itself reads (host patterns), outside the role's argument spec."""
    text = (REPO_ROOT / "playbooks" / f"{role}.yml").read_text()
    return set(re.findall(r"\b([a-z_][a-z0-9_]*)\s*\|\s*default\(", text))


def is_of_type(value, kind):
    """isinstance, except that JSON's true and false are not numbers (bool is an int in Python)."""
    return isinstance(value, kind) and not isinstance(value, bool)


def choices_of(question):
    choices = question["choices"]
    if isinstance(choices, str):
        return [choice for choice in choices.splitlines() if choice.strip()]
    return list(choices)


def as_role_reads_it(value, option):
    """The value a survey answer becomes in the role: what the role does with a string it is given."""
    kind = option.get("type", "str")
    if kind == "bool":
        return check_type_bool(value)
    if kind == "list" and isinstance(value, str):
        # the roles read a string as a comma-separated list: split(',') | map('trim') | select
        return [item.strip() for item in value.split(",") if item.strip()]
    # a mapping variable (type dict, or raw with a mapping default, read with dict_input) takes a JSON object
    if (kind == "dict" or (kind == "raw" and isinstance(option.get("default"), dict))) and isinstance(value, str):
        parsed = json.loads(value)
        assert isinstance(parsed, dict), f"{value!r} is not a JSON object"
        return parsed
    return value


@pytest.mark.parametrize("role", ROLES)
def test_survey_has_awx_top_level_keys(role):
    survey = load_survey(role)
    assert set(survey) == {"name", "description", "spec"}
    assert isinstance(survey["name"], str) and survey["name"]
    assert isinstance(survey["description"], str) and survey["description"]
    assert isinstance(survey["spec"], list) and survey["spec"]


@pytest.mark.parametrize("role", ROLES)
def test_questions_follow_awx_survey_spec(role):
    variables = []
    for question in load_survey(role)["spec"]:
        where = f"{role}.json {question.get('variable')}"
        assert set(question) <= QUESTION_KEYS, f"{where}: unknown keys {set(question) - QUESTION_KEYS}"
        for key in ("question_name", "question_description", "variable", "type"):
            assert isinstance(question.get(key), str) and question[key], f"{where}: {key} must be a non-empty string"
        assert isinstance(question.get("required"), bool), f"{where}: required must be a boolean"
        assert question["type"] in QUESTION_TYPES, f"{where}: type {question['type']!r} is not an AWX type"
        for key in ("min", "max"):
            if key in question:
                assert question[key] is None or is_of_type(question[key], int), f"{where}: {key} must be an integer"
        if question["type"] in ("multiplechoice", "multiselect"):
            choices = choices_of(question)
            assert choices and all(isinstance(c, str) and c for c in choices), f"{where}: choices must be strings"
            assert len(set(choices)) == len(choices), f"{where}: duplicate choices"
        if "default" in question and question["default"] != "":
            expected = QUESTION_TYPES[question["type"]]
            assert is_of_type(question["default"], expected), f"{where}: default is not a {expected.__name__}"
        variables.append(question["variable"])
    assert len(variables) == len(set(variables)), "a variable is asked twice"


@pytest.mark.parametrize("role", ROLES)
def test_defaults_pass_awx_answer_validation(role):
    """AWX validates each default as an answer before it puts it into extra vars."""
    for question in load_survey(role)["spec"]:
        where = f"{role}.json {question['variable']}"
        if question["required"] and "default" not in question:
            continue  # the operator has to answer
        assert "default" in question, f"{where}: an optional question needs a default"
        default = question["default"]
        low, high = question.get("min"), question.get("max")
        if question["type"] in ("text", "textarea", "password"):
            measure = len(default)
        elif question["type"] in ("integer", "float"):
            measure = default
        else:
            measure = None
        if measure is not None:
            assert low is None or measure >= low, f"{where}: default below min"
            assert high is None or measure <= high, f"{where}: default above max"
        if question["type"] == "multiplechoice":
            assert default in choices_of(question), f"{where}: default is not one of the choices"
        if question["required"] and question["type"] in ("text", "textarea"):
            assert low and low >= 1, f"{where}: a required text question must not accept an empty answer"


@pytest.mark.parametrize("role", ROLES)
def test_every_variable_is_a_role_or_playbook_input(role):
    options = role_options(role)
    own = playbook_variables(role)
    for question in load_survey(role)["spec"]:
        variable = question["variable"]
        assert variable in options or variable in own, (
            f"{role}.json asks for {variable}, which neither meta/argument_specs.yml nor playbooks/{role}.yml reads"
        )


@pytest.mark.parametrize("role", ROLES)
def test_question_types_and_choices_match_argument_specs(role):
    options = role_options(role)
    for question in load_survey(role)["spec"]:
        option = options.get(question["variable"])
        if option is None:
            assert question["type"] in ("text", "textarea"), "a playbook variable is a host pattern: text"
            continue
        kind = option.get("type", "str")
        where = f"{role}.json {question['variable']} ({kind})"
        assert question["type"] in TYPES_FOR[kind], f"{where}: question type {question['type']}"
        if kind == "bool":
            assert sorted(choices_of(question)) == ["false", "true"], f"{where}: choices must be true and false"
        elif "choices" in option:
            assert sorted(choices_of(question)) == sorted(option["choices"]), f"{where}: choices differ from the role's"
        elif question["type"] == "multiplechoice":
            pytest.fail(f"{where}: the role accepts any value, a choice question would restrict it")


@pytest.mark.parametrize("role", ROLES)
def test_defaults_pass_the_roles_argument_spec_and_equal_the_role_defaults(role):
    options = role_options(role)
    defaults = role_defaults(role)
    extra_vars = {
        question["variable"]: question["default"]
        for question in load_survey(role)["spec"]
        if "default" in question and question["variable"] in options
    }
    # What validate_argument_spec (the role's first task) does with the survey's extra vars.
    result = ArgumentSpecValidator(options).validate(dict(extra_vars))
    assert not result.error_messages, f"{role}.json defaults rejected by the role: {result.error_messages}"
    for variable, value in extra_vars.items():
        role_default = defaults[variable]
        assert "{{" not in str(role_default), f"{role}.json {variable}: the role's default is a template, leave it out"
        assert as_role_reads_it(value, options[variable]) == role_default, (
            f"{role}.json {variable}: default {value!r} differs from the role's {role_default!r}"
        )
