# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The settings one engine cannot carry (_compat.engine_gaps): refused, ignored, and the sentences that say so."""

from __future__ import annotations

import pytest

from ansible_collections.ferry.docker.plugins.module_utils._compat import api_tuple, engine_gaps
from ansible_collections.ferry.docker.plugins.module_utils._runconfig import to_create_body

ENGINE_20 = "Docker 20.10.24 (API 1.41) on host host1"
ENGINE_26 = "Docker 26.1.5 (API 1.45) on host host3"


def body(config=None, host_config=None):
    run_config = {"name": "web", "image": "busybox", "config": config or {}, "host_config": host_config or {}}
    return to_create_body(run_config)[1]


def gaps(config=None, host_config=None, api="1.41", cgroup="1", engine=ENGINE_20):
    return engine_gaps(body(config, host_config), api, cgroup, engine)


def test_api_versions_are_read_as_numbers():
    assert api_tuple("1.41") == (1, 41)
    assert api_tuple("1.45") > api_tuple("1.9")
    assert api_tuple("auto") is None
    assert api_tuple(None) is None


def test_a_plain_container_has_no_gaps_on_either_engine():
    plain = {"Env": ["A=1"], "Healthcheck": {"Test": ["CMD", "true"], "Interval": 2_000_000_000}}
    for api, engine in (("1.41", ENGINE_20), ("1.45", ENGINE_26)):
        found = gaps(plain, {"Memory": 64 << 20, "RestartPolicy": {"Name": "always"}}, api=api, engine=engine)
        assert not found and found.refused == [] and found.ignored == []


def test_a_health_start_interval_is_listed_for_an_engine_below_1_44():
    health = {"Healthcheck": {"Test": ["CMD", "true"], "StartPeriod": 10_000_000_000, "StartInterval": 2_000_000_000}}
    found = gaps(health)
    assert found.refused == []
    (text,) = found.ignored
    assert text.startswith("Healthcheck.StartInterval (2s): " + ENGINE_20 + " ignores it")
    assert "API 1.44" in text and "Docker 25.0" in text
    assert not gaps(health, api="1.44")
    assert not gaps(health, api="1.45", engine=ENGINE_26)


def test_a_volume_subpath_is_refused_below_1_45_and_names_the_volume():
    mount = {"Type": "volume", "Source": "appdata", "Target": "/data", "VolumeOptions": {"Subpath": "sub/dir"}}
    found = gaps(host_config={"Mounts": [mount]}, api="1.44")
    assert found.ignored == []
    (text,) = found.refused
    assert text.startswith("HostConfig.Mounts[/data].VolumeOptions.Subpath (sub/dir): ")
    assert "mount all of volume appdata" in text and "API 1.45" in text
    assert not gaps(host_config={"Mounts": [mount]}, api="1.45", engine=ENGINE_26)


def test_read_only_bind_options_below_1_44_force_is_refused_non_recursive_needs_nothing():
    # Below API 1.44 read-only binds are non-recursive: ReadOnlyNonRecursive is ignored there to the same effect.
    force = {"Type": "bind", "Source": "/srv", "Target": "/srv", "ReadOnly": True}
    force["BindOptions"] = {"ReadOnlyForceRecursive": True}
    loose = {"Type": "bind", "Source": "/etc/app", "Target": "/etc/app", "ReadOnly": True}
    loose["BindOptions"] = {"ReadOnlyNonRecursive": True}
    found = gaps(host_config={"Mounts": [force, loose]})
    assert [text.split(":")[0] for text in found.refused] == [
        "HostConfig.Mounts[/srv].BindOptions.ReadOnlyForceRecursive"
    ]
    assert "submounts of the read-only bind writable" in found.refused[0]
    assert found.ignored == []
    assert not gaps(host_config={"Mounts": [force, loose]}, api="1.44")


def test_create_mountpoint_below_1_42_and_annotations_below_1_43_are_listed():
    mount = {"Type": "bind", "Source": "/new", "Target": "/new", "BindOptions": {"CreateMountpoint": True}}
    found = gaps(host_config={"Mounts": [mount], "Annotations": {"io.example/b": "2", "io.example/a": "1"}})
    assert found.refused == []
    assert [text.split(" (")[0].split(":")[0] for text in found.ignored] == [
        "HostConfig.Annotations",
        "HostConfig.Mounts[/new].BindOptions.CreateMountpoint",
    ]
    assert "io.example/a, io.example/b" in found.ignored[0]
    assert [t.split(":")[0] for t in gaps(host_config={"Mounts": [mount]}, api="1.42").ignored] == []
    assert [t.split(" (")[0] for t in gaps(host_config={"Annotations": {"a": "1"}}, api="1.42").ignored] == [
        "HostConfig.Annotations"
    ]
    assert not gaps(host_config={"Annotations": {"a": "1"}}, api="1.43")


def test_kernel_memory_is_listed_for_engines_from_1_42_that_no_longer_apply_it():
    assert not gaps(host_config={"KernelMemory": 64 << 20}, api="1.41")
    (text,) = gaps(host_config={"KernelMemory": 64 << 20}, api="1.45", engine=ENGINE_26).ignored
    assert text.startswith(f"HostConfig.KernelMemory ({64 << 20} bytes): {ENGINE_26} ignores it")


def test_cgroup_v2_discards_swappiness_and_refuses_a_real_time_budget():
    settings = {"MemorySwappiness": 10, "CpuRealtimeRuntime": 950000, "CpuRealtimePeriod": 1000000}
    on_v1 = gaps(host_config=settings, cgroup="1")
    assert not on_v1
    on_v2 = gaps(host_config=settings, cgroup="2")
    assert [text.split(" (")[0] for text in on_v2.ignored] == ["HostConfig.MemorySwappiness"]
    assert [text.split(" (")[0] for text in on_v2.refused] == [
        "HostConfig.CpuRealtimePeriod",
        "HostConfig.CpuRealtimeRuntime",
    ]
    assert all("cgroup v2" in text for text in on_v2.ignored + on_v2.refused)
    # -1 is the engine's "not set" for swappiness
    assert not gaps(host_config={"MemorySwappiness": -1}, cgroup="2")


def test_an_engine_without_an_api_version_is_an_error_naming_it():
    with pytest.raises(ValueError, match="host host1 reports no API version"):
        engine_gaps(body(), "", None, "Docker ? on host host1")
