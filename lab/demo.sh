#!/usr/bin/env bash
# `make demo`: migrate the sample service from lab host1 to host2 with playbooks/migrate.yml, then
# print the run's report and the command that shows the page served from host2.
set -euo pipefail
cd "$(dirname "$0")/.."
export ANSIBLE_CONFIG=$PWD/ansible.cfg
report=$PWD/lab/.state/demo-report.json

echo "== Starting the sample service ferry-demo-web on host1 (lab/demo-service.yml)"
ansible-playbook lab/demo-service.yml

echo "== Migrating it to host2 (playbooks/migrate.yml)"
ansible-playbook playbooks/migrate.yml -e migrate_source=host1 -e migrate_target=host2 \
  -e migrate_containers=ferry-demo-web -e migrate_report_path="$report" "$@"

echo "== Report ($report)"
cat "$report"
echo
echo "== The page, served from host2:"
echo "   ssh -F lab/.state/ssh_config host2 curl -s --connect-timeout 5 --max-time 20 http://127.0.0.1:8080/"
ssh -F lab/.state/ssh_config host2 curl -s --connect-timeout 5 --max-time 20 http://127.0.0.1:8080/
