# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The shared restore planner (issue 11: preflight and restore decide with one planner)."""

from __future__ import annotations

import copy
import json
import os

import pytest

from ansible_collections.ferry.docker.plugins.module_utils import _planner
from ansible_collections.ferry.docker.plugins.module_utils import _runconfig as rc
from ansible_collections.ferry.docker.plugins.module_utils._runconfig import RunConfigError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "runconfig")


def run_config(scenario="plain"):
    with open(os.path.join(FIXTURES, scenario + ".json")) as handle:
        doc = json.load(handle)
    return rc.capture(doc["container"], doc["image"], doc["networks"], doc["volumes"])


def params(**given):
    base = dict.fromkeys(_planner.OVERRIDES)
    base.update(bundle=None, run_config=None, allow_privileged=False)
    base.update(given)
    return base


class Keys:
    """Stands in for _trust.BundleKeys: what open_bundle found about the signature."""

    def __init__(self, trusted, signer=None):
        self.trusted = trusted
        self.signer = signer


def with_bundle(monkeypatch, manifest):
    opened = []

    def fake_open_bundle(bundle_dir, keys=None):
        opened.append(bundle_dir)
        return copy.deepcopy(manifest), []

    monkeypatch.setattr(_planner, "open_bundle", fake_open_bundle)
    return opened


def test_a_run_config_option_is_planned_with_the_overrides():
    config = run_config()
    plan = _planner.plan_container(params(name="copy-1", image="busybox:copy"), run_config=config)
    assert (plan.name, plan.body["Image"], plan.manifest, plan.trusted) == ("copy-1", "busybox:copy", None, False)
    assert plan.name_problems == [] and plan.privileged == [] and not plan.privileged_allowed
    assert plan.digest == rc.stamp_digest(plan.body, plan.extra_networks)
    # the same inputs give the same plan: the preflight checks what the restore then does
    again = _planner.plan_container(params(name="copy-1", image="busybox:copy"), run_config=run_config())
    assert (again.body, again.digest) == (plan.body, plan.digest)


def test_the_run_config_option_comes_from_params_by_default(monkeypatch):
    config = run_config()
    config["host_config"]["Privileged"] = True
    with_bundle(monkeypatch, {"run_config": run_config()})
    plan = _planner.plan_container(params(bundle="/b/1", run_config=config), keys=Keys(True, "ops"))
    assert plan.run_config is config and plan.privileged and not plan.trusted


def test_names_docker_refuses_are_problems_not_exceptions():
    plan = _planner.plan_container(params(name="bad name/../x"), run_config=run_config())
    assert plan.name_problems and any("bad name/../x" in text for text in plan.name_problems)


def test_privilege_bearing_settings_need_allow_privileged():
    config = run_config()
    config["host_config"]["Privileged"] = True
    plan = _planner.plan_container(params(), run_config=config)
    assert plan.privileged and not plan.privileged_allowed
    allowed = _planner.plan_container(params(allow_privileged=True), run_config=config)
    assert allowed.privileged_allowed


def test_a_trusted_signature_vouches_for_the_bundles_own_run_config_only(monkeypatch):
    config = run_config()
    config["host_config"]["Privileged"] = True
    opened = with_bundle(monkeypatch, {"run_config": config})
    plan = _planner.plan_container(params(bundle="/b/1"), keys=Keys(True, "ops"))
    assert opened == ["/b/1"]
    assert (plan.trusted, plan.signer, plan.privileged_allowed) == (True, "ops", True)
    assert plan.manifest == {"run_config": config}
    # a run config given as an option is not what the signer signed
    option = _planner.plan_container(params(bundle="/b/1"), run_config=config, keys=Keys(True, "ops"))
    assert (option.trusted, option.privileged_allowed) == (False, False)
    untrusted = _planner.plan_container(params(bundle="/b/1"), keys=Keys(False))
    assert (untrusted.trusted, untrusted.privileged_allowed) == (False, False)


def test_no_run_config_is_an_error_that_says_what_to_do(monkeypatch):
    with_bundle(monkeypatch, {"artifacts": []})
    with pytest.raises(RunConfigError, match=r"bundle /b/2 holds no run_config; capture it .* or give run_config"):
        _planner.plan_container(params(bundle="/b/2"), keys=Keys(False))


def test_a_run_config_without_a_name_needs_the_name_option():
    config = run_config()
    config.pop("name", None)
    with pytest.raises(RunConfigError, match="records no container name; set name"):
        _planner.plan_container(params(), run_config=config)
    assert _planner.plan_container(params(name="given"), run_config=config).name == "given"


class Engine:
    """Stands in for the Docker client: only the API version it negotiated."""

    def __init__(self, api_version):
        self.api_version = api_version


def test_the_plan_names_what_the_target_engine_cannot_carry():
    config = run_config()
    config["config"]["Healthcheck"] = {"Test": ["CMD", "true"], "StartInterval": 2_000_000_000}
    plan = _planner.plan_container(params(), run_config=config)
    info = {"ServerVersion": "20.10.24", "CgroupVersion": "1"}
    gaps = plan.engine_gaps(Engine("1.41"), info, "host h2")
    assert gaps.refused == []
    (text,) = gaps.ignored
    assert text.startswith("Healthcheck.StartInterval (2s): Docker 20.10.24 (API 1.41) on host h2 ignores it")
    assert not plan.engine_gaps(Engine("1.45"), dict(info, ServerVersion="26.1.5"), "host h3")
