# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_commit_save's stream into another host's engine (stream_to), with the transfer's ssh replaced by fakes."""

from __future__ import annotations

import contextlib
import hashlib
import threading

import pytest
import zstandard

from ansible_collections.ferry.docker.plugins.module_utils import _step_commit_save, _transfer

IMAGE = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
TARGET = {"user": "root", "address": "192.0.2.12", "port": 22, "key_dir": "/k", "timeout": 60}


class Failed(Exception):
    pass


class FakeCap:
    def __init__(self, chunks, compression="none"):
        self.client = type("Client", (), {"get_image": lambda _self, ref, chunk_size: iter(chunks)})()
        self.compression, self.level = compression, None

    @contextlib.contextmanager
    def errors(self, what):
        yield

    def fail(self, msg):
        raise Failed(msg)


class FakeLoad:
    def __init__(self, loaded):
        self.loaded, self.data, self.aborted = loaded, b"", False

    def write(self, data):
        self.data += data

    @property
    def bytes(self):
        return len(self.data)

    def finish(self):
        if isinstance(self.loaded, Exception):
            raise self.loaded
        return self.loaded

    def abort(self):
        self.aborted = True


@pytest.fixture
def remote(monkeypatch):
    state = {"has": "", "zstd": True, "removed": [], "load": None, "unpack": None}
    monkeypatch.setattr(_transfer, "probe_target", lambda *args, **kwargs: (state["has"], state["zstd"]))
    monkeypatch.setattr(
        _transfer, "remove_remote_image", lambda *args, **kwargs: state["removed"].append(args[4]) or ""
    )
    monkeypatch.setattr(
        _transfer, "RemoteLoad", lambda *args, **kwargs: state.update(unpack=kwargs["unpack"]) or state["load"]
    )
    return state


def test_the_image_goes_whole_into_the_load_and_is_recorded_as_new(remote):
    remote["load"] = FakeLoad([IMAGE])
    out = _step_commit_save.stream(FakeCap([b"tar", b"data"]), IMAGE, {"RootFS": {"Layers": ["l1"]}}, [], TARGET)
    assert remote["load"].data == b"tardata" and remote["unpack"] == "none"
    assert out == dict(
        to="root@192.0.2.12",
        image_id=IMAGE,
        new=True,
        compression="none",
        bytes=7,
        raw_bytes=7,
        sha256=hashlib.sha256(b"tardata").hexdigest(),
        excluded_layers=[],
    )


@pytest.mark.parametrize("zstd, wire", [(True, "zstd"), (False, "none")])
def test_a_zstd_capture_streams_zstd_only_to_a_host_that_can_unpack_it(remote, zstd, wire):
    remote["load"], remote["zstd"] = FakeLoad([IMAGE]), zstd
    data = [b"layer" * 10000] * 20
    out = _step_commit_save.stream(FakeCap(data, compression="zstd"), IMAGE, {}, [], TARGET)
    assert remote["unpack"] == wire and out["compression"] == wire and out["raw_bytes"] == 1000000
    sent = remote["load"].data
    assert (zstandard.ZstdDecompressor().decompressobj().decompress(sent) if zstd else sent) == b"".join(data)
    assert (out["bytes"] < 10000) is zstd and out["sha256"] == hashlib.sha256(b"".join(data)).hexdigest()


def test_a_host_that_has_the_image_gets_nothing(remote):
    remote["has"] = IMAGE
    out = _step_commit_save.stream(FakeCap([b"never read"]), IMAGE, {}, [], TARGET)
    assert out["new"] is False and out["bytes"] == 0 and remote["load"] is None


def test_an_engine_that_loads_another_image_has_it_removed_and_the_step_fails(remote):
    remote["load"] = FakeLoad([OTHER])
    with pytest.raises(Failed, match=rf"loaded {OTHER} from the stream of image {IMAGE}; what it loaded was removed"):
        _step_commit_save.stream(FakeCap([b"tar"]), IMAGE, {}, [], TARGET)
    assert remote["removed"] == [OTHER]


def test_a_failed_load_is_stopped_and_named(remote):
    remote["load"] = FakeLoad(_transfer.SendFailed("docker load on root@192.0.2.12 failed (exit 1): no space left"))
    with pytest.raises(Failed, match=rf"streaming image {IMAGE} into the engine on root@192.0.2.12 failed: .*no space"):
        _step_commit_save.stream(FakeCap([b"tar"]), IMAGE, {}, [], TARGET)
    assert remote["load"].aborted


def test_with_the_unpack_known_the_stream_starts_at_once_and_its_end_waits_for_the_image_check(remote, monkeypatch):
    answered = threading.Event()
    seen = {}

    def probe(*args, **kwargs):
        # the stream has started: everything but its last 64 KiB is with the load, and its end is not
        answered.wait(timeout=5)
        seen["sent before the answer"] = remote["load"].bytes
        return (remote["has"], True)

    monkeypatch.setattr(_transfer, "probe_target", probe)
    data = [bytes([n]) * 100000 for n in range(10)]  # 1,000,000 bytes
    remote["load"] = FakeLoad([IMAGE])

    class Cap(FakeCap):
        def __init__(self):
            super().__init__(data)

            def chunks(_self, ref, chunk_size):
                yield from data
                answered.set()  # the whole archive has been read from the engine

            self.client = type("Client", (), {"get_image": chunks})()

    out = _step_commit_save.stream(Cap(), IMAGE, {}, [], dict(TARGET, unpack="none"))
    assert remote["unpack"] == "none" and out["new"] is True and remote["load"].data == b"".join(data)
    assert seen["sent before the answer"] == 1000000 - _step_commit_save.HOLD_BACK


def test_with_the_unpack_known_a_host_that_has_the_image_gets_its_load_cut_off_before_the_end(remote):
    remote["has"], remote["load"] = IMAGE, FakeLoad([IMAGE])
    data = [b"x" * 300000]
    out = _step_commit_save.stream(FakeCap(data), IMAGE, {}, [], dict(TARGET, unpack="zstd"))
    assert out["new"] is False and out["bytes"] == 0 and remote["load"].aborted
    assert remote["load"].bytes < 300000  # its end never went


def test_with_the_unpack_known_a_failed_image_check_stops_the_load_and_names_the_host(remote, monkeypatch):
    def probe(*args, **kwargs):
        raise _transfer.SendFailed("could not ask the engine on root@192.0.2.12 whether it has image (exit 255)")

    monkeypatch.setattr(_transfer, "probe_target", probe)
    remote["load"] = FakeLoad([IMAGE])
    with pytest.raises(Failed, match=r"streaming image .* on root@192.0.2.12 failed: could not ask"):
        _step_commit_save.stream(FakeCap([b"tar"]), IMAGE, {}, [], dict(TARGET, unpack="none"))
    assert remote["load"].aborted


@pytest.mark.parametrize("sizes", [[1], [70000], [10, 200000, 5], [65536, 65536, 65536], [1] * 200000])
def test_held_back_passes_all_but_the_last_64_kib_until_released(sizes):
    out = type("Out", (), {"data": b"", "write": lambda self, d: setattr(self, "data", self.data + d)})()
    held = _step_commit_save._HeldBack(out)
    whole = b""
    for n, size in enumerate(sizes):
        piece = bytes([n % 251]) * size
        whole += piece
        held.write(piece)
        assert whole.startswith(out.data) and len(whole) - len(out.data) >= min(len(whole), _step_commit_save.HOLD_BACK)
    held.release()
    assert out.data == whole
