# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The work of M(ferry.docker.docker_export): ``SPEC`` and ``KWARGS`` (its argument spec), ``run(module)``.

The module file runs it in its own process; ``docker_migrate_source`` runs it in its process, one step
after another (``_steps``).
"""

from __future__ import annotations

from ansible_collections.ferry.docker.plugins.module_utils._bundle import artifact_entry
from ansible_collections.ferry.docker.plugins.module_utils._capture import Capture, argument_spec, image_config
from ansible_collections.ferry.docker.plugins.module_utils._stream import CHUNK_SIZE, suffix

SPEC = dict(argument_spec(), container=dict(type="str", required=True))
KWARGS = dict(supports_check_mode=True)


def run(fm):
    """The module's work, given its FerryModule (or a _steps.StepModule inside another module's process)."""
    cap = Capture(fm)
    inspect = cap.inspect_container(fm.params["container"])
    name = inspect["Name"].lstrip("/")
    filename = "filesystem.tar" + suffix(cap.compression)
    if fm.check_mode:
        fm.exit(**cap.planned([filename]))

    run_config = cap.run_config(inspect)
    config = image_config(inspect)
    cap.ensure_dest(inspect)
    with cap.errors(f"exporting container {name} to {cap.dest}"):
        written = cap.write(fm.client.export(inspect["Id"], chunk_size=CHUNK_SIZE), filename)
    entry = artifact_entry("filesystem", name, written, container_id=inspect["Id"])
    changed = cap.record([entry], inspect, run_config=run_config, extra={"image_config": config})
    fm.exit(**cap.result(written, entry, changed, image_config=sorted(config)))
