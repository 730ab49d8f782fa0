# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Rows 1-5: each capture and restore module against the shell one-liner, on the same data.

Our side runs the module directly as a child process (no Ansible; its overhead is rows 6-7). The
restore rows (4, 5) read one archive written by our capture module in ``setup``, and both sides
read that same file. Every run ends with a round-trip check of what that side produced.
"""

from __future__ import annotations

import json
import shlex
import shutil

import pyrage
from pyrage import x25519

from benchmarks.data import LABEL, fingerprint_archive, fingerprint_tree, image_archive
from benchmarks.harness import ROWS, CheckFailed, Row, RowError, measure, module_command, register, shell_command

__all__ = ["ROWS"]  # the registry, filled by the @register classes below

TIMEOUT = 1800  # Docker API timeout for our modules: the engine prepares a whole save before sending it


def _q(value):
    return shlex.quote(str(value))


def _fresh_dir(path):
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _expect(ctx, fingerprint, what):
    if fingerprint.digest != ctx.source.fingerprint or fingerprint.count != ctx.source.entries:
        raise CheckFailed(
            f"{what} holds {fingerprint.count} entries with fingerprint {fingerprint.digest[:16]}, "
            f"the source {ctx.source.entries} entries with {ctx.source.fingerprint[:16]}"
        )


def _not_found(exc):
    return getattr(getattr(exc, "response", None), "status_code", None) == 404


def _remove_image(api, ref):
    try:
        api.remove_image(ref, force=True)
    except Exception as exc:  # docker.errors.ImageNotFound
        if not _not_found(exc):
            raise


def _remove_volume(api, name):
    try:
        api.remove_volume(name, force=True)
    except Exception as exc:
        if not _not_found(exc):
            raise


def _only_artifact(result):
    artifacts = result.get("artifacts") or [result.get("artifact")]
    if len(artifacts) != 1 or not artifacts[0]:
        raise CheckFailed(f"expected one artifact in the module result, got {artifacts!r}")
    return artifacts[0]


@register
class VolumeBackup(Row):
    number = 1
    title = "docker_volume_backup (zstd)"
    baseline = "tar -C <volume mountpoint> -cf - . | zstd -T0 -3 -o out"

    def out(self, ctx, side, run):
        return ctx.path(f"r1-{side}-{run}")

    def prepare(self, ctx, side, run):
        _fresh_dir(self.out(ctx, side, run))

    def command(self, ctx, side, run):
        out = self.out(ctx, side, run)
        if side == "ours":
            args = dict(volumes=[ctx.source.volume], dest=str(out), compression="zstd", timeout=TIMEOUT)
            return module_command(ctx, "docker_volume_backup", args, f"r1-{run}")
        return shell_command(f"tar -C {_q(ctx.source.mountpoint)} -cf - . | zstd -T0 -3 -o {_q(out / 'out.tar.zst')}")

    def check(self, ctx, side, run, outcome):
        if side == "ours":
            path = _only_artifact(outcome.result)["file"]
            path = self.out(ctx, side, run) / path
        else:
            path = self.out(ctx, side, run) / "out.tar.zst"
        _expect(ctx, fingerprint_archive(path), f"the archive of {side}")

    def cleanup(self, ctx, side, run):
        shutil.rmtree(self.out(ctx, side, run), ignore_errors=True)


@register
class Export(Row):
    number = 2
    title = "docker_export (zstd)"
    baseline = "docker export c | zstd -T0 -3 -o out"

    def out(self, ctx, side, run):
        return ctx.path(f"r2-{side}-{run}")

    def prepare(self, ctx, side, run):
        _fresh_dir(self.out(ctx, side, run))

    def command(self, ctx, side, run):
        out = self.out(ctx, side, run)
        if side == "ours":
            args = dict(container=ctx.source.container, dest=str(out), compression="zstd", timeout=TIMEOUT)
            return module_command(ctx, "docker_export", args, f"r2-{run}")
        return shell_command(f"docker export {_q(ctx.source.container)} | zstd -T0 -3 -o {_q(out / 'out.tar.zst')}")

    def check(self, ctx, side, run, outcome):
        name = _only_artifact(outcome.result)["file"] if side == "ours" else "out.tar.zst"
        _expect(ctx, fingerprint_archive(self.out(ctx, side, run) / name, prefix="data/"), f"the export of {side}")

    def cleanup(self, ctx, side, run):
        shutil.rmtree(self.out(ctx, side, run), ignore_errors=True)


def check_image_archive(ctx, path, image_id, what):
    """The save archive holds image ``image_id`` whose top layer has exactly the source data under /data."""
    manifest, layers = image_archive(path)
    if len(manifest) != 1:
        raise CheckFailed(f"{what} holds {len(manifest)} images, expected 1")
    config = manifest[0]["Config"].split("/")[-1].replace(".json", "")
    if config != image_id.split(":")[-1]:
        raise CheckFailed(f"{what} holds image {config[:12]}, expected {image_id}")
    top = manifest[0]["Layers"][-1]
    if top not in layers:
        raise CheckFailed(f"{what} has no {top}: the data layer is missing")
    _expect(ctx, layers[top], f"the data layer of {what}")


@register
class CommitSave(Row):
    """Both sides commit the stopped source container and save the whole image (no exclude_layers).

    Our module runs with ``keep_image: true``: removing the committed image (and its layer) is
    work the baseline does not do in its timed part, so both images are removed after the run.
    """

    number = 3
    title = "docker_commit_save (zstd)"
    baseline = "docker commit c img && docker save img | zstd -T0 -3 -o out"

    def out(self, ctx, side, run):
        return ctx.path(f"r3-{side}-{run}")

    def image(self, ctx, side, run):
        return f"ferry-bench/commit:{ctx.run_id}-{side}-{run}"

    def prepare(self, ctx, side, run):
        _fresh_dir(self.out(ctx, side, run))

    def command(self, ctx, side, run):
        out, image = self.out(ctx, side, run), self.image(ctx, side, run)
        if side == "ours":
            # keep_image: the baseline leaves its image too; both are removed untimed in cleanup
            args = dict(
                container=ctx.source.container,
                dest=str(out),
                compression="zstd",
                image_name=image,
                keep_image=True,
                timeout=TIMEOUT,
            )
            return module_command(ctx, "docker_commit_save", args, f"r3-{run}")
        return shell_command(
            f"docker commit {_q(ctx.source.container)} {_q(image)} >/dev/null && "
            f"docker save {_q(image)} | zstd -T0 -3 -o {_q(out / 'out.tar.zst')}"
        )

    def check(self, ctx, side, run, outcome):
        if side == "ours":
            artifact = _only_artifact(outcome.result)
            path, image_id = self.out(ctx, side, run) / artifact["file"], artifact["image_id"]
        else:
            path, image_id = (
                self.out(ctx, side, run) / "out.tar.zst",
                ctx.api.inspect_image(self.image(ctx, side, run))["Id"],
            )
        check_image_archive(ctx, path, image_id, f"the image archive of {side}")

    def cleanup(self, ctx, side, run):
        _remove_image(ctx.api, self.image(ctx, side, run))
        shutil.rmtree(self.out(ctx, side, run), ignore_errors=True)


@register
class VolumeRestore(Row):
    """Both sides extract the same archive (written by docker_volume_backup in setup) into a new empty volume."""

    number = 4
    title = "docker_volume_restore"
    baseline = "zstd -dc out | tar -C <mountpoint> -xf -"

    def setup(self, ctx):
        bundle = _fresh_dir(ctx.path("r4-bundle"))
        args = dict(volumes=[ctx.source.volume], dest=str(bundle), compression="zstd", timeout=TIMEOUT)
        result = measure(module_command(ctx, "docker_volume_backup", args, "r4-setup")).result
        ctx.state["r4"] = {"bundle": bundle, "archive": bundle / _only_artifact(result)["file"]}

    def volume(self, ctx, side, run):
        return ctx.name("restore", side, run)

    def prepare(self, ctx, side, run):
        name = self.volume(ctx, side, run)
        _remove_volume(ctx.api, name)
        if side == "baseline":
            ctx.api.create_volume(name, labels={LABEL: "restore"})

    def command(self, ctx, side, run):
        state, name = ctx.state["r4"], self.volume(ctx, side, run)
        if side == "ours":
            args = dict(
                bundle=str(state["bundle"]),
                volumes=[ctx.source.volume],
                volume_map={ctx.source.volume: name},
                timeout=TIMEOUT,
            )
            return module_command(ctx, "docker_volume_restore", args, f"r4-{run}")
        mountpoint = ctx.api.inspect_volume(name)["Mountpoint"]
        return shell_command(f"zstd -dc {_q(state['archive'])} | tar -C {_q(mountpoint)} -xf -")

    def check(self, ctx, side, run, outcome):
        mountpoint = ctx.api.inspect_volume(self.volume(ctx, side, run))["Mountpoint"]
        _expect(ctx, fingerprint_tree(mountpoint), f"the volume restored by {side}")

    def cleanup(self, ctx, side, run):
        _remove_volume(ctx.api, self.volume(ctx, side, run))

    def teardown(self, ctx):
        shutil.rmtree(ctx.path("r4-bundle"), ignore_errors=True)


def _chains(api):
    """Every local image's layer chain prefixes, as tuples -> the image that has it."""
    chains = {}
    for image in api.images(all=True):
        layers = (api.inspect_image(image["Id"]).get("RootFS") or {}).get("Layers") or []
        for end in range(1, len(layers) + 1):
            chains.setdefault(tuple(layers[:end]), image["Id"])
    return chains


@register
class Load(Row):
    """Both sides load the same image archive (written by docker_commit_save in setup).

    ``docker load`` skips layers the engine already has. Both sides face the same situation: the
    busybox base layer is present (the source container's image), the data layer is not; the image
    is removed after every run and ``prepare`` refuses to go on if any other image holds the data layer.
    """

    number = 5
    title = "docker_load"
    baseline = "zstd -dc out | docker load"

    def setup(self, ctx):
        bundle = _fresh_dir(ctx.path("r5-bundle"))
        args = dict(
            container=ctx.source.container,
            dest=str(bundle),
            compression="zstd",
            image_name=f"ferry-bench/load:{ctx.run_id}",
            timeout=TIMEOUT,
        )
        artifact = _only_artifact(measure(module_command(ctx, "docker_commit_save", args, "r5-setup")).result)
        ctx.state["r5"] = {
            "bundle": bundle,
            "archive": bundle / artifact["file"],
            "image_id": artifact["image_id"],
            "layers": artifact["layers"],
        }

    def prepare(self, ctx, side, run):
        state = ctx.state["r5"]
        _remove_image(ctx.api, state["image_id"])
        holder = _chains(ctx.api).get(tuple(state["layers"]))
        if holder:
            raise RowError(
                f"image {holder} on the engine already has the data layer, so docker load would skip it; "
                "remove that image so that both sides load the same bytes"
            )
        if tuple(state["layers"][:-1]) not in _chains(ctx.api):
            raise RowError("the base layers of the image are not on the engine; the fixture image is missing")

    def command(self, ctx, side, run):
        state = ctx.state["r5"]
        if side == "ours":
            return module_command(ctx, "docker_load", dict(bundle=str(state["bundle"]), timeout=TIMEOUT), f"r5-{run}")
        return shell_command(f"zstd -dc {_q(state['archive'])} | docker load >/dev/null")

    def check(self, ctx, side, run, outcome):
        state = ctx.state["r5"]
        try:
            image = ctx.api.inspect_image(state["image_id"])
        except Exception as exc:
            if _not_found(exc):
                raise CheckFailed(f"after the load by {side}, image {state['image_id']} is not on the engine") from exc
            raise
        layers = (image.get("RootFS") or {}).get("Layers") or []
        if layers != state["layers"]:
            raise CheckFailed(f"the image loaded by {side} has layers {json.dumps(layers)}, expected {state['layers']}")

    def cleanup(self, ctx, side, run):
        _remove_image(ctx.api, ctx.state["r5"]["image_id"])

    def teardown(self, ctx):
        if "r5" in ctx.state:
            _remove_image(ctx.api, ctx.state["r5"]["image_id"])
        shutil.rmtree(ctx.path("r5-bundle"), ignore_errors=True)


@register
class EncryptedVolumeBackup(Row):
    """Row 9: the cost of encryption at rest, our module against itself on the same volume."""

    number = 9
    title = "docker_volume_backup (zstd) with encrypt_recipients (age X25519)"
    baseline = "docker_volume_backup (zstd), not encrypted"
    target = 1.1

    def out(self, ctx, side, run):
        return ctx.path(f"r9-{side}-{run}")

    def setup(self, ctx):
        identity = x25519.Identity.generate()
        ctx.state["r9"] = {"identity": identity, "recipient": str(identity.to_public())}

    def prepare(self, ctx, side, run):
        _fresh_dir(self.out(ctx, side, run))

    def command(self, ctx, side, run):
        out = self.out(ctx, side, run)
        args = dict(volumes=[ctx.source.volume], dest=str(out), compression="zstd", timeout=TIMEOUT)
        if side == "ours":
            args["encrypt_recipients"] = [ctx.state["r9"]["recipient"]]
        return module_command(ctx, "docker_volume_backup", args, f"r9-{side}-{run}")

    def check(self, ctx, side, run, outcome):
        artifact = _only_artifact(outcome.result)
        path = self.out(ctx, side, run) / artifact["file"]
        if side == "ours":
            if artifact.get("encryption") != "age":
                raise CheckFailed(f"the artifact of {side} is not encrypted: {artifact!r}")
            plain = self.out(ctx, side, run) / "check.tar.zst"  # the check's own copy, outside the timed run
            pyrage.decrypt_file(str(path), str(plain), [ctx.state["r9"]["identity"]])
            path = plain
        _expect(ctx, fingerprint_archive(path), f"the archive of {side}")

    def cleanup(self, ctx, side, run):
        shutil.rmtree(self.out(ctx, side, run), ignore_errors=True)
