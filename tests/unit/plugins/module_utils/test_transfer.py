# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The direct transfer's rsync: its arguments, the bytes it sent, and how it fails."""

from __future__ import annotations

import hashlib
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


# -- docker load on another host, fed through the run's SSH connection --------------------------------------------

IMAGE = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def _popen_running(script):
    """A ``popen`` for RemoteLoad that runs ``script`` here (sh) instead of ssh; it keeps the ssh argv it was given."""
    seen = {}

    def popen(argv, **kwargs):
        seen["argv"] = argv
        return subprocess.Popen(["sh", "-c", script], **kwargs)

    return popen, seen


def test_a_remote_load_is_docker_load_over_the_shared_connection_and_hashes_what_it_fed():
    popen, seen = _popen_running(f'cat >/dev/null; echo "Loaded image ID: {IMAGE}"')
    load = _transfer.RemoteLoad("/k", 2222, "root", "192.0.2.12", timeout=30, popen=popen)
    load.write(b"abc")
    load.write(b"")
    load.write(b"def")
    assert load.finish() == [IMAGE]
    assert load.bytes == 6 and load.sha256 == hashlib.sha256(b"abcdef").hexdigest()
    argv = seen["argv"]
    assert argv[0] == "ssh" and argv[-2:] == ["root@192.0.2.12", "docker load"]
    assert "ControlMaster=auto" in argv and "StrictHostKeyChecking=yes" in argv


def test_a_load_that_stops_reading_fails_with_its_last_words():
    popen, _seen = _popen_running("echo 'Error processing tar file: unexpected EOF' >&2; exit 1")
    load = _transfer.RemoteLoad("/k", 22, "root", "192.0.2.12", timeout=30, popen=popen)
    with pytest.raises(_transfer.SendFailed, match=r"docker load on root@192\.0\.2\.12 .*unexpected EOF"):
        for _chunk in range(64):  # more than a pipe holds: the write meets the closed pipe
            load.write(b"x" * 65536)
        load.finish()
    load.abort()  # safe after a failure


def test_a_load_past_its_timeout_is_killed_and_says_so():
    popen, _seen = _popen_running("exec sleep 30")
    load = _transfer.RemoteLoad("/k", 22, "root", "192.0.2.12", timeout=0.3, popen=popen)
    with pytest.raises(_transfer.SendFailed, match=r"took more than 0\.3 s"):
        load.finish()


def test_a_load_that_tags_an_image_is_refused():
    popen, _seen = _popen_running("cat >/dev/null; echo 'Loaded image: evil/web:latest'")
    load = _transfer.RemoteLoad("/k", 22, "root", "192.0.2.12", timeout=30, popen=popen)
    load.write(b"tar")
    with pytest.raises(_transfer.SendFailed, match="loaded a tagged image"):
        load.finish()


@pytest.mark.parametrize(
    "code, out, expected",
    [
        (0, f"zstd=yes\n{IMAGE}\n", (IMAGE, True)),
        (0, f"zstd=no\nError: No such image: {IMAGE}\n", ("", False)),
        (0, "zstd=yes\nError response from daemon: x", None),
        (255, "", None),
    ],
)
def test_what_the_other_host_has_for_an_image_stream(code, out, expected):
    def run(argv, **kwargs):
        assert f"docker image inspect --format '{{{{.Id}}}}' {IMAGE}" in argv[-1] and "command -v zstd" in argv[-1]
        return types.SimpleNamespace(returncode=code, stdout=out, stderr="")

    if expected is None:
        with pytest.raises(_transfer.SendFailed, match=r"could not ask the engine on root@192\.0\.2\.12"):
            _transfer.probe_target("/k", 22, "root", "192.0.2.12", IMAGE, run=run)
    else:
        assert _transfer.probe_target("/k", 22, "root", "192.0.2.12", IMAGE, run=run) == expected


def test_a_zstd_stream_is_unpacked_by_zstd_there():
    popen, seen = _popen_running(f'cat >/dev/null; echo "Loaded image ID: {IMAGE}"')
    load = _transfer.RemoteLoad("/k", 22, "root", "192.0.2.12", timeout=30, unpack="zstd", popen=popen)
    assert load.finish() == [IMAGE] and seen["argv"][-1] == "zstd -dc | docker load"


def test_only_an_image_id_goes_into_the_remote_commands():
    with pytest.raises(ValueError, match="is not an image ID"):
        _transfer.probe_target("/k", 22, "root", "h", "web; rm -rf /")
    assert "is not an image ID" in _transfer.remove_remote_image("/k", 22, "root", "h", "$(reboot)")

    def run(argv, **kwargs):
        return types.SimpleNamespace(returncode=1, stdout="", stderr="image is being used by running container")

    assert "still there" in _transfer.remove_remote_image("/k", 22, "root", "h", OTHER, run=run)


X86 = "processor\t: 0\nflags\t\t: fpu vme sse2 aes avx2 sha_ni\nbugs\t\t: spectre_v1\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"
NO_AES = "processor\t: 0\nflags\t\t: fpu vme sse2 avx2 vaes_like aes-ish\nmodel name\t: aes\n"


@pytest.mark.parametrize("text, expected", [(X86, True), (ARM, True), (NO_AES, False), ("", False)])
def test_aes_instructions_are_read_from_the_flags_or_features(text, expected):
    assert _transfer.has_aes(text) is expected


def test_a_cpu_with_aes_prefers_aes_gcm_and_keeps_the_other_ciphers():
    assert _transfer.cipher_options(False) == []
    (option,) = _transfer.cipher_options(True)[1:]
    ciphers = option.removeprefix("Ciphers=").split(",")
    assert ciphers[0] == "aes128-gcm@openssh.com"
    # OpenSSH's defaults, all of them: a server that allows only some still finds one
    assert set(ciphers) == {
        "chacha20-poly1305@openssh.com",
        "aes128-ctr",
        "aes192-ctr",
        "aes256-ctr",
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
    }


def test_only_the_shared_connection_of_a_module_on_the_sender_chooses_a_cipher(monkeypatch):
    """The transfer role's rsync argv is computed on the controller (the filter), whose CPU says nothing of the
    source's: only the shared connection, made by a module on the source, reads that host's CPU."""
    monkeypatch.setattr(_transfer, "_local_aes", lambda: True)
    assert f"Ciphers={_transfer.AES_FIRST}" in _transfer.ssh_command("/k", 22, shared=True)
    assert not any(o.startswith("Ciphers=") for o in _transfer.ssh_command("/k", 22))
    monkeypatch.setattr(_transfer, "_local_aes", lambda: False)
    assert not any(o.startswith("Ciphers=") for o in _transfer.ssh_command("/k", 22, shared=True))


@pytest.mark.parametrize(
    "code, out, expected",
    [(0, "zstd=yes\n", "zstd"), (0, "zstd=no\n", "none"), (0, "bash: motd\nzstd=yes", None), (255, "", None)],
)
def test_how_the_other_host_unpacks_an_image_stream(code, out, expected):
    def run(argv, **kwargs):
        assert argv[-1].startswith("if command -v zstd") and "docker" not in argv[-1]
        return types.SimpleNamespace(returncode=code, stdout=out, stderr="")

    if expected is None:
        with pytest.raises(_transfer.SendFailed, match=r"could not ask root@192\.0\.2\.12 whether it has zstd"):
            _transfer.probe_unpack("/k", 22, "root", "192.0.2.12", run=run)
    else:
        assert _transfer.probe_unpack("/k", 22, "root", "192.0.2.12", run=run) == expected


def test_a_question_that_times_out_or_cannot_start_ssh_names_the_host_and_what_was_asked():
    def slow(argv, **kwargs):
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])

    def missing(argv, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", "ssh")

    with pytest.raises(_transfer.SendFailed, match=r"asking root@h whether it has zstd took more than 7 s"):
        _transfer.probe_unpack("/k", 22, "root", "h", timeout=7, run=slow)
    with pytest.raises(_transfer.SendFailed, match=rf"asking root@h whether it has image {IMAGE} took more than 60 s"):
        _transfer.probe_target("/k", 22, "root", "h", IMAGE, run=slow)
    for probe in (
        lambda: _transfer.probe_unpack("/k", 22, "root", "h", run=missing),
        lambda: _transfer.probe_target("/k", 22, "root", "h", IMAGE, run=missing),
    ):
        with pytest.raises(_transfer.SendFailed, match="ssh could not run on this host to reach root@h"):
            probe()
