# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The direct transfer's rsync: its arguments, the bytes it sent, and how it fails."""

from __future__ import annotations

import shlex
import subprocess
import types

import pytest

from ansible_collections.ferry.docker.plugins.filter.transfer_rsync_argv import transfer_rsync_argv
from ansible_collections.ferry.docker.plugins.module_utils import _transfer


def test_rsync_checks_host_keys_with_the_run_key_and_makes_every_directory_private():
    argv = _transfer.rsync_argv("/k/run 1", 2222, "/w/run1/web/", "deploy", "192.0.2.12", "/in/run1-host1-web")
    assert argv[-2:] == ["/w/run1/web/", "deploy@192.0.2.12:/in/run1-host1-web/"]
    assert {"--archive", "--partial", "--mkpath", "--chmod=Dgo-rwx", "--stats"} <= set(argv)
    ssh = shlex.split(argv[argv.index("--rsh") + 1])  # rsync splits it on spaces and honours quotes
    assert ssh[:3] == ["ssh", "-i", "/k/run 1/id_ed25519"] and ssh[-2:] == ["-p", "2222"]
    assert "StrictHostKeyChecking=yes" in ssh and "UserKnownHostsFile=/k/run 1/known_hosts" in ssh
    assert "BatchMode=yes" in ssh and any(o.startswith("ConnectTimeout=") for o in ssh)
    assert transfer_rsync_argv("/k/run 1", "2222", "/w/run1/web/", "deploy", "192.0.2.12", "/in/run1-host1-web") == argv


@pytest.mark.parametrize(
    "stats, sent",
    [("Total bytes sent: 5,947\nTotal bytes received: 112", 5947), ("Total bytes sent: 1.234.567", 1234567), ("", 0)],
)
def test_the_bytes_sent_come_from_rsync_stats(stats, sent):
    assert _transfer.sent_bytes(stats) == sent


def test_a_send_returns_the_bytes_or_fails_naming_the_destination_and_rsyncs_last_words():
    def ok(argv, **kwargs):
        assert argv[0] == "rsync" and kwargs["timeout"] == 60
        return types.SimpleNamespace(returncode=0, stdout="Total bytes sent: 42\n", stderr="")

    assert _transfer.send("/k", 22, "/w/a", "root", "192.0.2.12", "/in/a", 60, run=ok) == 42

    def refused(argv, **kwargs):
        return types.SimpleNamespace(returncode=255, stdout="", stderr="x\nHost key verification failed.\n")

    with pytest.raises(_transfer.SendFailed, match=r"root@192.0.2.12:/in/a failed \(rsync exit 255\): .*Host key"):
        _transfer.send("/k", 22, "/w/a", "root", "192.0.2.12", "/in/a", 60, run=refused)

    def slow(argv, **kwargs):
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])

    with pytest.raises(_transfer.SendFailed, match="more than 60 s"):
        _transfer.send("/k", 22, "/w/a", "root", "192.0.2.12", "/in/a", 60, run=slow)
