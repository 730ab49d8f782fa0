# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The restore steps run in one process: argument checks, results as the modules give them, the undo."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import types

import pytest

from ansible_collections.ferry.docker.plugins.module_utils import _steps


class Parent:
    check_mode = False
    module = types.SimpleNamespace(warn=lambda text: None, _diff=False)
    base_url = "unix:///var/run/docker.sock"

    def __init__(self, client=None):
        self.client = client


def fake_step(run):
    return types.SimpleNamespace(
        SPEC=dict(bundle=dict(type="path", required=True), force=dict(type="bool", default=False)),
        KWARGS=dict(supports_check_mode=True),
        run=run,
    )


@pytest.fixture
def step(monkeypatch):
    seen = {}

    def run(module):
        seen["params"] = module.params
        if module.params["bundle"] == "/bad":
            module.fail("bundle /bad is damaged", phase="verify")
        module.exit(changed=True, operation="load")

    monkeypatch.setitem(_steps._LOADED, "ferry.docker.docker_load", fake_step(run))
    return seen


def test_a_step_gets_its_arguments_checked_and_completed_and_answers_as_the_module(step):
    call = _steps.caller(Parent())
    assert call("ferry.docker.docker_load", {"bundle": "/b"}) == {"changed": True, "operation": "load"}
    assert step["params"]["force"] is False and step["params"]["bundle"] == "/b"
    failed = call("ferry.docker.docker_load", {"bundle": "/bad"})
    assert failed == {"failed": True, "msg": "bundle /bad is damaged", "phase": "verify"}
    refused = call("ferry.docker.docker_load", {"force": "maybe"})
    assert refused["failed"] and "bundle" in refused["msg"]


def test_a_large_step_runs_plainly_in_this_process(step):
    # a capture with a volume copied straight into the target runs here even when a member is large enough to
    # report progress: SourceRun then hands the step its progress, which only the action plugin can display
    call = _steps.caller(Parent(), source=False)
    progress = {"path": "/b", "label": "loading", "interval": 10, "timeout": 60}
    assert call("ferry.docker.docker_load", {"bundle": "/b"}, progress=progress) == {
        "changed": True,
        "operation": "load",
    }


def test_a_step_that_breaks_fails_instead_of_skipping_the_undo(monkeypatch):
    def run(module):
        raise KeyError("Id")

    monkeypatch.setitem(_steps._LOADED, "ferry.docker.docker_load", fake_step(run))
    result = _steps.caller(Parent())("ferry.docker.docker_load", {"bundle": "/b"})
    assert result["failed"] and "failed unexpectedly" in result["msg"] and "KeyError" in result["exception"]


def test_only_removals_and_checks_run_besides_the_steps(tmp_path):
    call = _steps.caller(Parent())
    assert call("ansible.builtin.command", {"argv": ["true"]})["failed"]
    assert call("ansible.builtin.file", {"path": str(tmp_path), "state": "directory"})["failed"]
    assert call("community.docker.docker_container", {"name": "web", "state": "started"})["failed"]
    received = tmp_path / "run1-host1-web"
    (received / "web").mkdir(parents=True)
    (received / "web" / "manifest.json").write_text("{}")
    assert call("ansible.builtin.file", {"path": str(received), "state": "absent"}) == {
        "changed": True,
        "path": str(received),
    }
    assert not received.exists()
    assert call("ansible.builtin.file", {"path": str(received), "state": "absent"})["changed"] is False


class Gone(Exception):
    response = types.SimpleNamespace(status_code=404)


class Client:
    def __init__(self, error=None):
        self.calls, self.error = [], error

    def _do(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if self.error:
            raise self.error

    remove_container = remove_network = remove_volume = remove_image = _do


def test_the_undo_removes_by_name_and_a_missing_object_is_already_removed():
    client = Client()
    call = _steps.caller(Parent(client))
    assert call("community.docker.docker_container", {"name": "web", "state": "absent", "force_kill": True}) == {
        "changed": True
    }
    assert call("community.docker.docker_image", {"name": "sha256:x", "state": "absent", "force_absent": True})
    assert client.calls == [(("web",), {"force": True}), (("sha256:x",), {"force": True})]
    gone = _steps.caller(Parent(Client(Gone("404 Client Error: no such volume"))))
    assert gone("community.docker.docker_volume", {"name": "data", "state": "absent"}) == {"changed": False}
    busy = _steps.caller(Parent(Client(RuntimeError("409 Conflict: volume is in use"))))
    left = busy("community.docker.docker_volume", {"name": "data", "state": "absent"})
    assert left["failed"] and "volume data" in left["msg"] and "in use" in left["msg"]


def test_a_tcp_check_that_never_answers_times_out(monkeypatch):
    monkeypatch.setattr(_steps.time, "sleep", lambda seconds: None)
    ticks = iter([0.0, 0.5, 1.5, 2.5])
    monkeypatch.setattr(_steps.time, "monotonic", lambda: next(ticks))

    def refuse(address, timeout):
        raise ConnectionRefusedError("refused")

    monkeypatch.setattr(_steps.socket, "create_connection", refuse)
    result = _steps.caller(Parent())("ansible.builtin.wait_for", {"host": "127.0.0.1", "port": 9, "timeout": 2})
    assert result["failed"] and "127.0.0.1:9" in result["msg"]


class SourceClient:
    """The engine of a source host: containers by name with a state; records what is done to them."""

    def __init__(self, **states):
        self.states = dict(states)
        self.done = []
        self.exit_codes = {}

    def inspect_container(self, name):
        if name not in self.states:
            raise Gone(f"404 Client Error: no such container: {name}")
        state = self.states[name]
        running = state in ("running", "paused")
        return {
            "Id": name,
            "State": {"Running": running, "Paused": state == "paused", "ExitCode": self.exit_codes.get(name, 0)},
        }

    def _do(self, verb, name, new):
        self.done.append((verb, name))
        self.states[name] = new

    def stop(self, name, timeout):
        self.done.append(("timeout", timeout))
        self._do("stop", name, "exited")

    def start(self, name):
        self._do("start", name, "running")

    def pause(self, name):
        self._do("pause", name, "paused")

    def unpause(self, name):
        self._do("unpause", name, "running")

    def remove_container(self, name, force, v):
        self.done.append(("v", v))
        self._do("remove", name, None)
        del self.states[name]


def test_a_source_container_is_stopped_started_paused_or_removed_as_docker_container_would():
    client = SourceClient(web="running", db="paused", old="exited")
    call = _steps.caller(Parent(client), source=True)
    container = "community.docker.docker_container"
    # how it ended, as community.docker.docker_container says it (a kill at the stop timeout: 137)
    stopped = {"changed": True, "container": {"State": {"ExitCode": 0}}}
    assert call(container, {"name": "web", "state": "stopped", "stop_timeout": 30}) == stopped
    assert call(container, {"name": "web", "state": "stopped"}) == {"changed": False}  # already stopped
    assert call(container, {"name": "web", "state": "started", "paused": False}) == {"changed": True}
    assert call(container, {"name": "web", "state": "started", "paused": False}) == {"changed": False}
    assert call(container, {"name": "old", "state": "started", "paused": True}) == {"changed": True}
    assert client.states["old"] == "paused"
    assert call(container, {"name": "db", "state": "started", "paused": False}) == {"changed": True}
    assert call(container, {"name": "db", "state": "absent", "keep_volumes": True}) == {"changed": True}
    assert call(container, {"name": "db", "state": "absent", "keep_volumes": True}) == {"changed": False}
    assert client.done == [
        ("timeout", 30),
        ("stop", "web"),
        ("start", "web"),
        ("start", "old"),
        ("pause", "old"),
        ("unpause", "db"),
        ("v", False),
        ("remove", "db"),
    ]
    missing = call(container, {"name": "gone", "state": "started"})
    assert missing["failed"] and "gone" in missing["msg"]


def test_a_source_runs_only_its_own_steps_and_a_target_only_its_own():
    source = _steps.caller(Parent(SourceClient()), source=True)
    for module in ("ferry.docker.docker_load", "ansible.builtin.file", "community.docker.docker_volume"):
        assert "not a step of a source" in source(module, {"name": "x", "state": "absent"})["msg"]
    # an image only to remove the one a capture committed
    refused = source("community.docker.docker_image", {"name": "x", "state": "present"})
    assert refused["failed"] and "only run here to remove a committed image" in refused["msg"]
    target = _steps.caller(Parent())
    refused = target("ferry.docker.docker_commit_save", {"container": "web", "dest": "/b"})
    assert refused["failed"] and "not a step this module runs" in refused["msg"]


def test_a_source_removes_the_image_its_capture_committed():
    class Engine(SourceClient):
        def remove_image(self, name, force=False):
            if name == "busy":
                raise RuntimeError("409 Client Error: conflict: image is being used by running container")
            if name == "gone":
                raise Gone("404 Client Error: no such image")
            self.done.append(("rmi", name, force))

    engine = Engine()
    source = _steps.caller(Parent(engine), source=True)
    image = "community.docker.docker_image"
    assert source(image, {"name": "ferry-migrate/web:latest", "state": "absent"}) == {"changed": True}
    assert source(image, {"name": "gone", "state": "absent"}) == {"changed": False}
    busy = source(image, {"name": "busy", "state": "absent"})
    assert busy["failed"] and "removing image busy failed" in busy["msg"] and "conflict" in busy["msg"]
    assert engine.done == [("rmi", "ferry-migrate/web:latest", False)]


def test_a_restore_imports_only_the_targets_steps_and_a_capture_only_the_sources():
    # a fresh interpreter: what a module process on the host compiles
    code = (
        "import sys\n"
        "from ansible_collections.ferry.docker.plugins.module_utils import _steps\n"
        "side = sys.argv[1]\n"
        "names = _steps.TARGET_STEPS if side == 'target' else _steps.SOURCE_STEPS\n"
        "other = _steps.SOURCE_STEPS if side == 'target' else _steps.TARGET_STEPS\n"
        "_steps.caller(None, source=side == 'source')\n"
        "assert all(callable(_steps.step_module(n).run) and _steps.step_module(n).SPEC for n in names)\n"
        "loaded = {m.rsplit('.', 1)[-1] for m in sys.modules if '.module_utils._step_' in m}\n"
        "print(sorted(loaded))\n"
    )
    found = {}
    for side in ("target", "source"):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        done = subprocess.run([sys.executable, "-c", code, side], capture_output=True, text=True, check=True, env=env)
        found[side] = set(ast.literal_eval(done.stdout))
    assert found["target"] == {
        "_step_load",
        "_step_preflight",
        "_step_import",
        "_step_volume_restore",
        "_step_container_restore",
        "_step_health",
    }
    assert found["source"] & found["target"] == set() and "_step_commit_save" in found["source"]
