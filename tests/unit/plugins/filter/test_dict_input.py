# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""dict_input: a role's mapping variable given as a mapping or as a JSON object string."""

from __future__ import annotations

import json

import pytest
from ansible.errors import AnsibleFilterError
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.ferry.docker.plugins.filter.dict_input import FilterModule, dict_input


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"80/tcp": 18080}, {"80/tcp": 18080}),
        ({}, {}),
        (None, {}),
        ("", {}),
        ("   \n", {}),
        ("null", {}),
        ("{}", {}),
        ('{"80/tcp": 18080}', {"80/tcp": 18080}),
        ('{"80/tcp": "127.0.0.1:18080"}', {"80/tcp": "127.0.0.1:18080"}),
        ('  {"web": "web-new"}\n', {"web": "web-new"}),
        (b'{"/srv/old": "/srv/new"}', {"/srv/old": "/srv/new"}),
    ],
)
def test_accepted_inputs(value, expected):
    assert dict_input(value, "restore_port_map") == expected


def test_returns_a_copy_of_a_mapping():
    given_map = {"a": "b"}
    result = dict_input(given_map)
    assert result == given_map
    assert result is not given_map


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("{80/tcp: 18080}", ["restore_port_map", "not a valid JSON object", "line 1 column 2"]),
        ("80/tcp=18080", ["restore_port_map", "not a valid JSON object"]),
        ('["web"]', ["restore_port_map", "JSON object", "not a JSON list"]),
        ("42", ["restore_port_map", "not a JSON int"]),
        ('"text"', ["restore_port_map", "not a JSON str"]),
        (["web"], ["restore_port_map", "not a list"]),
        (42, ["restore_port_map", "not a int"]),
    ],
)
def test_refused_inputs_name_the_variable(value, words):
    with pytest.raises(AnsibleFilterError) as caught:
        dict_input(value, "restore_port_map")
    for word in words:
        assert word in str(caught.value)


def test_default_name_in_the_message():
    with pytest.raises(AnsibleFilterError, match=r"^the variable must be"):
        dict_input([1])


@given(
    st.dictionaries(
        st.text(max_size=20), st.one_of(st.integers(), st.text(max_size=20), st.booleans(), st.none()), max_size=8
    )
)
def test_json_round_trip(mapping):
    assert dict_input(json.dumps(mapping), "x") == mapping
    assert dict_input(mapping, "x") == mapping


def test_registered_as_filter():
    assert FilterModule().filters()["dict_input"] is dict_input
