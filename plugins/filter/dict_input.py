# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: dict_input
short_description: Read a role's mapping input given as a dict or as a JSON object string
version_added: 0.1.0
author:
  - ferry.docker developers (@ferry-docker)
description:
  - >-
    Returns the mapping a role variable such as C(restore_port_map) stands for, whether it was given as a
    YAML mapping (inventory, C(-e @file.yml)) or as a JSON object in a string, as an AWX survey text field
    or C(-e 'var={"80/tcp": 8080}') passes it.
  - An empty string or C(null) is an empty mapping.
  - Anything else (invalid JSON, a JSON list, a number) fails with a message that names the variable,
    so that a wrong survey answer stops the run before anything is changed instead of being ignored.
positional: _input
options:
  _input:
    description: The variable's value.
    type: raw
    required: true
  name:
    description: Name of the variable, used in the error message.
    type: str
    default: the variable
"""

EXAMPLES = r"""
- name: Read the port map, also when a survey sent it as text
  ansible.builtin.set_fact:
    __restore_port_map: "{{ restore_port_map | ferry.docker.dict_input('restore_port_map') }}"
"""

RETURN = r"""
_value:
  description: The mapping; keys and values as given.
  type: dict
"""

import json
from collections.abc import Mapping

from ansible.errors import AnsibleFilterError


def dict_input(value, name="the variable"):
    """A dict from a mapping, a JSON object string, an empty string or None; AnsibleFilterError otherwise."""
    example = 'for example {"80/tcp": 8080}'
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        raise AnsibleFilterError(
            f"{name} must be a mapping or a JSON object ({example}), not a {type(value).__name__}: {value!r}"
        )
    text = value.strip()
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise AnsibleFilterError(
            f"{name} is not a valid JSON object ({exc}); give a JSON object, {example}, or {{}} for none"
        ) from exc
    if parsed is None:
        return {}
    if not isinstance(parsed, dict):
        raise AnsibleFilterError(
            f"{name} must be a JSON object ({example}), not a JSON {type(parsed).__name__}: {text[:200]}"
        )
    return parsed


class FilterModule:
    """ferry.docker input normalisation filter."""

    def filters(self):
        return {"dict_input": dict_input}
