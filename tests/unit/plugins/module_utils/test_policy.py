# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Restore policy: which settings of a create body are privilege-bearing (issue 13 D)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.ferry.docker.plugins.module_utils._policy import DEFAULT_CAPABILITIES, privileged_settings


def body(**host):
    return {"Image": "nginx", "HostConfig": host}


@pytest.mark.parametrize(
    "host,word",
    [
        ({"Privileged": True}, "privileged mode"),
        ({"NetworkMode": "host"}, "network namespace"),
        ({"PidMode": "host"}, "pid namespace"),
        ({"IpcMode": "host"}, "ipc namespace"),
        ({"UTSMode": "host"}, "uts namespace"),
        ({"UsernsMode": "host"}, "userns namespace"),
        ({"CapAdd": ["ALL"]}, "ALL"),
        ({"CapAdd": ["CAP_SYS_ADMIN"]}, "SYS_ADMIN"),
        ({"Devices": [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda"}]}, "/dev/sda"),
        ({"DeviceRequests": [{"Count": -1}]}, "device requests"),
        ({"DeviceCgroupRules": ["c 1:3 mr"]}, "c 1:3 mr"),
        ({"Binds": ["/:/host"]}, "root directory"),
        ({"Binds": ["/var/run/docker.sock:/var/run/docker.sock"]}, "Docker socket"),
        ({"Binds": ["/etc:/host-etc:ro"]}, "system directory /etc"),
        ({"Binds": ["/etc/../etc/shadow:/s"]}, "system directory"),
        ({"Mounts": [{"Type": "bind", "Source": "/proc", "Target": "/p"}]}, "system directory /proc"),
        ({"SecurityOpt": ["seccomp=unconfined"]}, "seccomp=unconfined"),
        ({"SecurityOpt": ["apparmor:unconfined"]}, "apparmor:unconfined"),
        ({"SecurityOpt": ["label=disable"]}, "label=disable"),
        ({"MaskedPaths": []}, "MaskedPaths"),
        (
            {
                "Mounts": [
                    {
                        "Type": "volume",
                        "Target": "/data",
                        "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {"type": "none", "o": "bind"}}},
                    }
                ]
            },
            "/data",
        ),
    ],
)
def test_privilege_bearing_settings_are_named(host, word):
    found = privileged_settings(body(**host))
    assert len(found) == 1 and word in found[0], found


@pytest.mark.parametrize(
    "host",
    [
        {},
        {"NetworkMode": "bridge", "PidMode": "", "IpcMode": "private", "CgroupnsMode": "host"},
        {"CapAdd": ["NET_BIND_SERVICE", "cap_chown"], "CapDrop": ["ALL"]},
        {"Binds": ["/srv/www:/usr/share/nginx/html:ro", "data:/data", "/etcetera:/x"]},
        {"Mounts": [{"Type": "bind", "Source": "/home/app", "Target": "/app"}]},
        {"SecurityOpt": ["no-new-privileges", "seccomp=/etc/profile.json"]},
        {"MaskedPaths": ["/proc/kcore"]},
    ],
)
def test_ordinary_settings_pass(host):
    assert privileged_settings(body(**host)) == []


@given(st.sets(st.sampled_from(sorted(DEFAULT_CAPABILITIES))))
def test_default_capabilities_are_not_privileged(caps):
    assert privileged_settings(body(CapAdd=sorted(caps))) == []
