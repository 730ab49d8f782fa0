#!/usr/bin/env bash
# Ecosystem gate: the collection as Galaxy, Automation Hub and ansible-builder see it.
#  1. builds the collection tarball (ansible-galaxy collection build) into a temporary directory;
#  2. imports it with galaxy-importer, as Galaxy does, and fails on any error or warning;
#  3. installs it into a temporary collections path and runs `ansible-builder introspect`, which must
#     find every line of requirements.txt and bindep.txt through meta/execution-environment.yml;
#  4. runs `ansible-builder create` on execution-environment.yml (no image is built: that needs a
#     registry) and checks that the build context lists every line of requirements.txt and bindep.txt,
#     the collection tarball of galaxy.yml's version, and every dependency of galaxy.yml with its range;
#     every range (galaxy.yml dependencies, requirements.txt) has an upper bound.
# Usage: bash tests/gates/ecosystem.sh   (from anywhere; uses .venv/bin when it exists)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
[ -x "$root/.venv/bin/python" ] && export PATH="$root/.venv/bin:$PATH"

work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-ecosystem.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Only the files under test count: no ansible.cfg of this checkout, nothing from ~/.ansible.
: >"$work/ansible.cfg"
export ANSIBLE_CONFIG=$work/ansible.cfg ANSIBLE_LOCAL_TEMP=$work/ansible-tmp ANSIBLE_HOME=$work/ansible-home

fail() {
  echo "FAIL ecosystem: $*" >&2
  exit 1
}

version=$(timeout 30 python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["version"])' galaxy.yml)
tarball_name=ferry-docker-$version.tar.gz

# --- 1. build ---------------------------------------------------------------------------------------
mkdir -p "$work/build"
timeout 300 ansible-galaxy collection build --output-path "$work/build" "$root" >"$work/build.log" 2>&1 \
  || { cat "$work/build.log" >&2; fail "ansible-galaxy collection build failed"; }
tarball=$work/build/$tarball_name
[ -f "$tarball" ] || fail "ansible-galaxy collection build did not write $tarball_name"
echo "built $tarball_name"

# --- 2. galaxy-importer -----------------------------------------------------------------------------
# galaxy-importer's defaults, set explicitly so that a galaxy-importer.cfg on this machine changes nothing.
# ansible-test inside the importer needs a container runtime and a registry: it stays off here; the
# `sanity` step of tests/run-all.sh runs ansible-test sanity on the same files.
mkdir -p "$work/importer"
if ! (cd "$work/importer" && timeout 900 env \
  GALAXY_IMPORTER_LOG_LEVEL_MAIN=INFO \
  GALAXY_IMPORTER_RUN_ANSIBLE_DOC=true \
  GALAXY_IMPORTER_RUN_ANSIBLE_LINT=true \
  GALAXY_IMPORTER_OFFLINE_ANSIBLE_LINT=true \
  GALAXY_IMPORTER_CHECK_CHANGELOG=true \
  GALAXY_IMPORTER_CHECK_REQUIRED_TAGS=false \
  GALAXY_IMPORTER_REQUIRE_V1_OR_GREATER=false \
  GALAXY_IMPORTER_RUN_FLAKE8=false \
  GALAXY_IMPORTER_RUN_ANSIBLE_TEST=false \
  GALAXY_IMPORTER_TMP_ROOT_DIR="$work/importer" \
  python -m galaxy_importer.main "$tarball" >"$work/importer.log" 2>&1); then
  cat "$work/importer.log" >&2
  fail "galaxy-importer rejected $tarball_name"
fi
if grep -E '^(WARNING|ERROR|CRITICAL):' "$work/importer.log" >&2; then
  fail "galaxy-importer reported the warnings or errors above for $tarball_name"
fi
grep -q '^Importer processing completed successfully' "$work/importer.log" \
  || { cat "$work/importer.log" >&2; fail "galaxy-importer did not complete"; }
echo "galaxy-importer: $(grep -c '^Loading ' "$work/importer.log") content items, no error, no warning"

# --- 3. ansible-builder introspect on the installed collection ----------------------------------------
timeout 300 ansible-galaxy collection install --offline --no-deps -p "$work/collections" "$tarball" \
  >"$work/install.log" 2>&1 || { cat "$work/install.log" >&2; fail "the tarball does not install"; }
timeout 120 ansible-builder introspect --write-pip "$work/introspect-requirements.txt" \
  --write-bindep "$work/introspect-bindep.txt" "$work/collections" >"$work/introspect.log" 2>&1 \
  || { cat "$work/introspect.log" >&2; fail "ansible-builder introspect failed"; }

# --- 4. ansible-builder create ----------------------------------------------------------------------
# The definition and the files it names, laid out as in the checkout after `make build`.
mkdir -p "$work/ee/build"
cp execution-environment.yml requirements.txt bindep.txt "$work/ee/"
cp "$tarball" "$work/ee/build/"
(cd "$work/ee" && timeout 300 ansible-builder create -f execution-environment.yml -c context \
  --output-filename Containerfile >"$work/create.log" 2>&1) \
  || { cat "$work/create.log" >&2; fail "ansible-builder create failed"; }
if grep -iwE 'warning|error' "$work/create.log" >&2; then
  fail "ansible-builder create reported the lines above"
fi

# --- the checks -------------------------------------------------------------------------------------
timeout 60 python - "$root" "$work" "$tarball_name" <<'PYTHON'
import sys
from pathlib import Path

import yaml
from packaging.requirements import Requirement

root, work, tarball_name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
context = work / "ee" / "context"
problems = []


def lines(path):
    """Requirement lines of a pip or bindep file: no comments, no blank lines, spaces collapsed."""
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(" ".join(line.split()))
    return out


def pip_set(path):
    return {str(Requirement(line)) for line in lines(path)}


pip_wanted = pip_set(root / "requirements.txt")
bindep_wanted = set(lines(root / "bindep.txt"))
if not pip_wanted or not bindep_wanted:
    problems.append("requirements.txt and bindep.txt must each list at least one requirement")

meta = yaml.safe_load((root / "meta" / "execution-environment.yml").read_text())
deps = meta.get("dependencies", {})
if deps.get("python") != "requirements.txt" or deps.get("system") != "bindep.txt":
    problems.append("meta/execution-environment.yml must point python at requirements.txt and system at bindep.txt")

for kind, found, wanted in (
    ("introspected Python requirements", pip_set(work / "introspect-requirements.txt"), pip_wanted),
    ("introspected system requirements", set(lines(work / "introspect-bindep.txt")), bindep_wanted),
    ("build context _build/requirements.txt", pip_set(context / "_build" / "requirements.txt"), pip_wanted),
    ("build context _build/bindep.txt", set(lines(context / "_build" / "bindep.txt")), bindep_wanted),
):
    missing = sorted(wanted - found)
    if missing:
        problems.append(f"{kind} lack {', '.join(missing)}")

galaxy = yaml.safe_load((root / "galaxy.yml").read_text())
# Ranges with an upper bound: a new major version of a dependency must not break an installed release.
for name, spec in (galaxy.get("dependencies") or {}).items():
    if not any(clause.strip().startswith("<") for clause in str(spec).split(",")):
        problems.append(f"galaxy.yml: dependency {name} {spec!r} has no upper bound")
for requirement in map(Requirement, lines(root / "requirements.txt")):
    if not any(clause.operator.startswith("<") for clause in requirement.specifier):
        problems.append(f"requirements.txt: {requirement} has no upper bound")
collections = yaml.safe_load((context / "_build" / "requirements.yml").read_text()).get("collections", [])
by_name = {entry["name"]: entry for entry in collections}
ours = f"collections/{tarball_name}"
if by_name.get(ours, {}).get("type") != "file":
    problems.append(f"build context _build/requirements.yml does not install {ours} (type: file)")
if not (context / "_build" / ours).is_file():
    problems.append(f"build context lacks _build/{ours}")
for name, spec in (galaxy.get("dependencies") or {}).items():
    entry = by_name.get(name)
    if entry is None:
        problems.append(f"build context _build/requirements.yml lacks {name}")
    elif str(entry.get("version")) != spec:
        problems.append(f"{name}: {entry.get('version')!r} in the EE, {spec!r} in galaxy.yml")

containerfile = (context / "Containerfile").read_text()
for step in ("ansible-galaxy collection install", "introspect.py introspect", "--user-pip=requirements.txt",
             "--user-bindep=bindep.txt", "install-from-bindep"):
    if step not in containerfile:
        problems.append(f"Containerfile lacks {step!r}")

for problem in problems:
    print("FAIL ecosystem:", problem, file=sys.stderr)
if problems:
    sys.exit(1)
print(f"execution environment: {len(pip_wanted)} Python and {len(bindep_wanted)} system requirements, "
      f"{tarball_name} and {len(galaxy.get('dependencies') or {})} collection dependencies in the build context")
PYTHON
echo "PASS ecosystem"
