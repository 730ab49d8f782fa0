#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine, and that the lab and test tools are installed.
# If none does: on Debian/Ubuntu as root, install Debian's docker.io (and the lab's build tools)
# and start dockerd in the background. Anywhere else, say what to install and stop.
set -euo pipefail

log() { printf 'ensure-docker: %s\n' "$*" >&2; }

engine_answers() { command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1; }

# Debian package -> a file it provides; the lab and the tests need all of them (age: the unit tests of
# the age binary backend of encryption).
need_pkgs=()
for pair in docker.io:/usr/sbin/dockerd debootstrap:/usr/sbin/debootstrap busybox-static:/bin/busybox \
            zstd:/usr/bin/zstd rsync:/usr/bin/rsync openssh-client:/usr/bin/ssh-keygen \
            shellcheck:/usr/bin/shellcheck age:/usr/bin/age; do
  pkg=${pair%%:*}; file=${pair#*:}
  if command -v dpkg-query >/dev/null 2>&1; then
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$pkg")
  else
    [ -x "$file" ] || need_pkgs+=("$pkg")
  fi
done

if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "missing: ${need_pkgs[*]}. This needs a Debian or Ubuntu machine as root to install them;"
    log "otherwise install Docker Engine, debootstrap, a static busybox, zstd, rsync, an ssh client and age, start dockerd, and rerun."
    engine_answers || exit 1
  else
    log "installing ${need_pkgs[*]} from the distribution's archive"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" iptables ca-certificates >/dev/null
  fi
fi

if engine_answers; then
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  log "no Docker engine answers and this is not root: start dockerd (or add yourself to the docker group) and rerun."
  exit 1
fi

log "starting dockerd in the background (log: /var/log/ferry-dockerd.log)"
dockerd_bin=$(command -v dockerd || echo /usr/sbin/dockerd)
nohup "$dockerd_bin" --host unix:///var/run/docker.sock >/var/log/ferry-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  if engine_answers; then
    log "dockerd is up: $(docker version --format '{{.Server.Version}}')"
    exit 0
  fi
  sleep 1
done
log "dockerd did not answer within 60 s; last lines of /var/log/ferry-dockerd.log:"
tail -n 20 /var/log/ferry-dockerd.log >&2 || true
exit 1
