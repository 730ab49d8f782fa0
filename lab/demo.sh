#!/usr/bin/env bash
# `make demo`: run the main job on the local lab.
# Until playbooks/migrate.yml exists it shows the running lab and its inventory; once it exists it
# migrates the sample service from host1 to host2.
set -euo pipefail
cd "$(dirname "$0")/.."
export ANSIBLE_CONFIG=$PWD/ansible.cfg

if [ -f playbooks/migrate.yml ]; then
  exec ansible-playbook playbooks/migrate.yml "$@"
fi

python lab/lab.py status
echo
echo "Inventory (lab/.state/inventory.ini):"
cat lab/.state/inventory.ini
echo
echo "Every lab host answers Ansible over SSH:"
ansible lab -m ansible.builtin.ping
echo
echo "Try:  ansible lab -a 'docker ps'   or   ssh -F lab/.state/ssh_config host1"
