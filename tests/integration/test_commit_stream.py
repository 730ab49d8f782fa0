# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_commit_save with stream_to: the committed image goes from this machine's engine straight into lab host2's
engine over SSH with a run key, untagged, and docker_load streamed=true tags it there after checking its ID.

Needs the lab (host2) and the local engine; it never skips. What it makes on host2 is removed in ``finally``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest
from ferry_run import run_module
from fixture_image import IMAGE
from lab_run import STATE, ssh

from ansible_collections.ferry.docker.plugins.module_utils import _bundle

RESOURCE_PREFIX = "ferry-it-stream"


@pytest.fixture
def key_dir():
    """A run-key directory as docker_migrate_source gets one: the lab's key and known_hosts (a short path: the
    shared connection's socket lives there)."""
    path = tempfile.mkdtemp(prefix="fk-", dir="/tmp")
    try:
        shutil.copy(STATE / "id_ed25519", f"{path}/id_ed25519")
        os.chmod(f"{path}/id_ed25519", 0o600)
        shutil.copy(STATE / "known_hosts", f"{path}/known_hosts")
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_committed_image_streams_into_the_other_engine_untagged_and_is_tagged_there_after_its_check(
    lab, client, res, tmp_path, key_dir, ansible_adhoc
):
    name = res.name("src")
    client.create_container(IMAGE, name=name, command=["sh", "-c", "echo streamed > /marker; sleep 600"])
    res.containers.append(name)
    client.start(name)
    bundle = tmp_path / "bundle"
    target = f"/tmp/{res.prefix}"
    image_id = ""
    try:
        out = run_module(
            "docker_commit_save",
            container=name,
            dest=str(bundle),
            image_name=f"{res.image('commit')}:1",
            stream_to={"address": lab["host2"], "key_dir": key_dir, "timeout": 120},
        )
        assert not out.get("failed"), out.get("msg")
        image_id = out["image_id"]
        streamed = out["streamed"]
        assert streamed["new"] and streamed["to"] == f"root@{lab['host2']}" and streamed["image_id"] == image_id
        assert streamed["bytes"] > 0 and len(streamed["sha256"]) == 64 and out["path"] == ""

        # nothing staged here: the bundle holds the manifest and no image archive, which names the streamed image
        manifest = _bundle.load_manifest(str(bundle))
        assert [n for n in sorted(os.listdir(bundle)) if not n.startswith(".")] == ["manifest.json"]
        assert _bundle.find_artifact(manifest, "image") is None
        assert _bundle.find_streamed(manifest, "image", name)["image_id"] == image_id
        assert client.images(name=res.image("commit")) == []  # the committed image was removed here

        # host2 has it, untagged, with the container's change in it
        inspect = json.loads(ssh("host2", f"docker image inspect {image_id}").stdout)[0]
        assert inspect["Id"] == image_id and inspect["RepoTags"] == []
        assert ssh("host2", f"docker run --rm {image_id} cat /marker").stdout.strip() == "streamed"

        # docker_load with streamed=true checks the ID and tags it; without it, the bundle says where the image went
        ssh("host2", f"mkdir -p {target}")
        ssh("host2", f"cat > {target}/manifest.json <<'EOF'\n{(bundle / 'manifest.json').read_text()}\nEOF")
        tag = f"{res.image('loaded')}:1"
        loaded = ansible_adhoc("host2", "ferry.docker.docker_load", {"bundle": target, "tag": tag, "streamed": True})
        loaded = loaded["host2"]
        assert not loaded.get("failed"), loaded.get("msg")
        assert loaded["operation"] == "tag" and loaded["image_id"] == image_id and loaded["tags"] == [tag]
        refused = ansible_adhoc("host2", "ferry.docker.docker_load", {"bundle": target, "tag": tag})["host2"]
        assert refused.get("failed") and f"was streamed to root@{lab['host2']}" in refused["msg"]

        # an engine without the image: nothing is tagged
        ssh("host2", f"docker image rm -f {tag} {image_id} >/dev/null")
        missing = ansible_adhoc("host2", "ferry.docker.docker_load", {"bundle": target, "tag": tag, "streamed": True})
        assert missing["host2"].get("failed") and "this engine does not have it" in missing["host2"]["msg"]
        assert ssh("host2", f"docker image inspect {tag}", check=False).returncode != 0
    finally:
        ssh("host2", f"docker image rm -f {res.image('loaded')}:1 {image_id} >/dev/null 2>&1; rm -rf {target}", False)
