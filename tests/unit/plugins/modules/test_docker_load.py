"""Which left-out layers an engine lacks before a thin image archive is loaded."""

from __future__ import annotations

import pytest

from ansible_collections.ferry.docker.plugins.module_utils._step_load import missing_layers

BASE = ("sha256:base", "sha256:mid")
ARTIFACT = {"layers": [*BASE, "sha256:own"], "excluded_layers": list(BASE)}


@pytest.mark.parametrize(
    ("chains", "missing"),
    [
        ({BASE[:1], BASE}, []),  # the base image is there
        ({BASE[:1]}, ["sha256:mid"]),  # only its first layer
        (set(), list(BASE)),  # nothing
        ({("sha256:other", "sha256:mid")}, list(BASE)),  # same diff ID, different parent: not the same layer
    ],
)
def test_missing_layers_compares_whole_chains(chains, missing):
    assert missing_layers(ARTIFACT, chains) == missing


def test_full_archive_needs_nothing():
    assert missing_layers({"layers": list(BASE), "excluded_layers": []}, set()) == []
