#!/usr/bin/env bash
# `make test`: set up everything the tests need, then run every gate and every test.
# Each step prints one line, PASS or FAIL, with its duration; the script exits non-zero if any failed.
# Every setup task and step has an overall time limit (limit_for below; FERRY_STEP_SECONDS_<step>
# overrides one, e.g. FERRY_STEP_SECONDS_molecule=3600): past it the step is stopped, with all that it
# started, and fails with a line naming the step and the commands that were still running.
# Usage: tests/run-all.sh [step ...]   (steps: ruff ansible-lint ecosystem sanity unit integration bench molecule)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$PWD

all_steps=(ruff ansible-lint ecosystem sanity unit integration bench molecule)
steps=("$@")
[ "${#steps[@]}" -gt 0 ] || steps=("${all_steps[@]}")

python=${PYTHON:-python3}
venv=$root/.venv
export PATH=$venv/bin:$PATH
export ANSIBLE_CONFIG=$root/ansible.cfg
logs=$root/tests/output/logs
mkdir -p "$logs"

# Seconds each step may take: about three times what it takes on a 2-CPU machine, so that only a
# hang reaches it. The sum stays under CI's 90 minutes.
limit_for() {
  local override="FERRY_STEP_SECONDS_${1//-/_}"
  if [ -n "${!override:-}" ]; then echo "${!override}"; return; fi
  case $1 in
    ruff) echo 30 ;;
    ansible-lint) echo 240 ;;
    ecosystem) echo 180 ;;
    sanity) echo 400 ;;
    unit) echo 120 ;;
    integration) echo 2400 ;;
    bench) echo 980 ;;
    molecule) echo 1500 ;;
    venv) echo 900 ;;
    engine) echo 900 ;;
    lab-images) echo 900 ;;
    *) echo 600 ;;
  esac
}

# within NAME LOG CMD...: run CMD in a session of its own with its output in LOG, for at most
# limit_for NAME seconds. On time-out: append to LOG which commands of the session were still
# running (the longest-running leaf processes first), stop the whole session, return 124.
within() {
  local name=$1 log=$2; shift 2
  local limit pid deadline
  limit=$(limit_for "$name")
  rm -f "$logs/$name.hung"
  setsid "$@" >"$log" 2>&1 </dev/null &
  pid=$!
  deadline=$((SECONDS + limit))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      {
        echo
        echo "TIMEOUT: step '$name' ran past its limit of $limit s; still running when stopped:"
        hung_commands "$pid"
      } | tee -a "$log" >"$logs/$name.hung"
      kill -TERM -- "-$pid" 2>/dev/null
      sleep 5
      kill -KILL -- "-$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
      return 124
    fi
    sleep 1
  done
  wait "$pid"
}

# The processes of session SID that have no child, oldest first: the commands a step waits on.
hung_commands() {
  ps -e -o pid=,ppid=,sid=,etimes=,args= | awk -v sid="$1" '
    $3 == sid { pid[$1] = 1; parent[$1] = $2; line[$1] = $0 }
    END {
      for (p in pid) if (parent[p] in pid) haschild[parent[p]] = 1
      for (p in pid) if (!(p in haschild)) {
        split(line[p], f, " "); args = line[p]; for (i = 1; i <= 4; i++) sub(/^ *[^ ]+/, "", args)
        printf "%10d s  pid %-8s %s\n", f[4], p, substr(args, 2, 300)
      }
    }' | sort -rn
}

setup() {
  local what=$1; shift
  if ! within "$what" "$logs/setup-$what.log" "$@"; then
    echo "FAIL setup: $what (log: tests/output/logs/setup-$what.log)"
    tail -n 40 "$logs/setup-$what.log"
    [ -z "${lane:-}" ] || wait "$lane"  # the gates' lane ends with its own lines
    exit 1
  fi
}

needs() { local s; for s in "${steps[@]}"; do case " $* " in *" $s "*) return 0 ;; esac; done; return 1; }

# --- setup: virtual environment, collection link, Docker engine, lab images -------------------------
if [ ! -f "$venv/.stamp" ] || [ requirements-dev.txt -nt "$venv/.stamp" ]; then
  setup venv bash tests/bootstrap-venv.sh "$python" "$venv"
  touch "$venv/.stamp"
fi
mkdir -p .cache/collections/ansible_collections/ferry
ln -sfn "$root" .cache/collections/ansible_collections/ferry/docker
if needs sanity integration bench molecule; then
  # Installs (as root on Debian) docker.io, the lab's build tools and shellcheck, and starts dockerd.
  setup engine bash lab/ensure-docker.sh
fi
# --- the steps -----------------------------------------------------------------------------------
step_ruff() {
  ruff check . && ruff format --check .
}

step_ansible-lint() {
  ansible-lint --profile production
}

step_ecosystem() {
  # galaxy-importer on the built tarball, ansible-builder introspect and create (no image build).
  bash tests/gates/ecosystem.sh
}

step_sanity() {
  # ansible-test wants to run from .../ansible_collections/ferry/docker: sanity-check a copy of the
  # files git knows (tracked, or new and not ignored). The copy lives outside this work tree, or
  # ansible-test would ask this repository's git for the file list and find the copy ignored.
  local work copy status
  work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-docker-sanity.XXXXXX") || return 1
  copy=$work/ansible_collections/ferry/docker
  mkdir -p "$copy"
  git ls-files -z --cached --others --exclude-standard \
    | tar --null --files-from=- --ignore-failed-read -cf - | tar -xf - -C "$copy"
  # The pip bootstrap that ansible-test downloads cannot be fetched here; use the offline stand-in.
  local cache=$HOME/.ansible/test/cache
  mkdir -p "$cache"
  cp tests/sanity/get_pip_standin.py "$cache/get_pip_24_2.py"
  (cd "$copy" && ansible-test sanity --python 3.11 --requirements --color no)
  status=$?
  rm -rf "$work"
  return $status
}

step_unit() {
  pytest -q tests/unit
}

step_integration() {
  # Three pytest runs in two lanes side by side. Lane 1: the tests of the lab hosts (marked `lab` by
  # tests/integration/conftest.py: every test that needs the lab fixture), the lab's migrations last. Lane 2: the
  # tests that use only this machine's engine (no engine in common with lane 1), then the lab tests of the files in
  # $beside. The lab is brought up first, so that the lanes never pick a subnet at once. Lab tests that run at the
  # same time only touch, and only look at, what they made (names of their own, their run's key line, journal and
  # processes). Those in $beside also change the lab (mixed_fleet adds host3, awx_project the sudo host), which no
  # test of lane 1 uses; awx_project's check mode looks at every restore key, as only no_secret_output's restore
  # (the same lane) makes them. The fault matrix of migrations runs each phase with one signal here; FERRY_FAULT_MATRIX=full
  # for all 24. FERRY_SERIAL=1: one run after another. --durations: the slowest tests in each log.
  local files lab_files=() beside_files=() file lab_status engine_status beside_status=0 engine_pid
  local beside=" test_awx_project.py test_mixed_fleet.py test_no_secret_output.py "
  local engine_log=$logs/integration-engine.log beside_log=$logs/integration-beside.log
  python lab/lab.py up || return 1
  mapfile -t files < <(printf '%s\n' tests/integration/test_*.py | awk '{print (/test_migrate_/ ? 1 : 0) " " $0}' \
    | sort -s -k1,1n | cut -d' ' -f2)
  for file in "${files[@]}"; do
    case $beside in *" ${file##*/} "*) beside_files+=("$file") ;; *) lab_files+=("$file") ;; esac
  done
  : >"$beside_log"
  (
    status=0
    pytest -q -p no:cacheprovider --durations=10 -m "not lab" "${files[@]}" >"$engine_log" 2>&1 || status=1
    FERRY_FAULT_MATRIX=${FERRY_FAULT_MATRIX:-diagonal} pytest -q -p no:cacheprovider --durations=10 -m lab \
      "${beside_files[@]}" >"$beside_log" 2>&1 || status=$((status | 2))
    exit $status
  ) &
  engine_pid=$!
  if [ "${FERRY_SERIAL:-0}" = 1 ]; then  # one at a time
    wait "$engine_pid"
    engine_status=$?
    engine_pid=""
  fi
  FERRY_FAULT_MATRIX=${FERRY_FAULT_MATRIX:-diagonal} pytest -q --durations=15 -m lab "${lab_files[@]}"
  lab_status=$?
  if [ -n "$engine_pid" ]; then
    wait "$engine_pid"
    engine_status=$?
  fi
  beside_status=$((engine_status & 2))
  engine_status=$((engine_status & 1))
  echo "--- the tests that use only this machine's engine, run beside the ones above:"
  cat "$engine_log"
  echo "--- the lab tests run after them, beside the ones above:"
  cat "$beside_log"
  local said='^=* ?[0-9]+ (passed|failed).* in [0-9.]+s' trim='s/=//g;s/^ *//;s/ *$//'
  echo "--- integration: lab hosts: $(grep -E "$said" "$logs/integration.log" | head -n 1 | sed "$trim")" \
    "(exit $lab_status) and $(grep -E "$said" "$beside_log" | tail -n 1 | sed "$trim") (exit $beside_status);" \
    "this machine's engine: $(grep -E "$said" "$engine_log" | tail -n 1 | sed "$trim") (exit $engine_status)"
  [ "$lab_status" -eq 0 ] && [ "$engine_status" -eq 0 ] && [ "$beside_status" -eq 0 ]
}

step_bench() {
  # The benchmark suite at a tiny scale: proves that every row runs and passes its round-trip
  # check; it asserts no timings. The figures go to tests/output, not benchmarks/results.
  python -m benchmarks --scale tiny --runs 1 --out tests/output/bench-tiny.json
}

step_molecule() {
  # The scenarios share the lab and touch only what they made (their own containers, volumes, journal and
  # backup directories; run keys are added and removed under a lock on the target): they run in two lanes
  # side by side, each lane's scenarios one after the other (FERRY_SERIAL=1: one lane). A lane's output is
  # printed whole once both lanes are done. One test takes host3's Docker socket away (migrate's
  # test_target_docker_gone_during_restore_rolls_back): it waits until the scenarios that use every host's
  # engine (host3_users) have ended, which the lane running them says by creating FERRY_LAB_HOST3_FREE once
  # the last of them is done, passed or failed. Lane 2 runs postgres first, so that the wait is short. A
  # scenario not named here joins the first lane; one that uses host3's engine belongs in host3_users.
  local scenario lane status=0 pids=() lanes=() first="lab_smoke backup verify" second="postgres migrate"
  local host3_users="lab_smoke backup"
  for scenario in molecule/*/molecule.yml; do
    scenario=$(basename "$(dirname "$scenario")")
    case " $first $second " in *" $scenario "*) ;; *) first="$first $scenario" ;; esac
  done
  if [ "${FERRY_SERIAL:-0}" = 1 ]; then lanes=("$first $second"); else lanes=("$first" "$second"); fi
  export FERRY_LAB_HOST3_FREE=$logs/molecule-host3-free
  rm -f "$FERRY_LAB_HOST3_FREE"
  for lane in "${!lanes[@]}"; do
    (
      failed=0 users=0
      for scenario in ${lanes[$lane]}; do
        case " $host3_users " in *" $scenario "*) users=$((users + 1)) ;; esac
      done
      for scenario in ${lanes[$lane]}; do
        echo "--- molecule test -s $scenario (lane $((lane + 1)), at $SECONDS s)"
        molecule test -s "$scenario" || { failed=1; echo "FAILED molecule scenario $scenario"; }
        case " $host3_users " in
          *" $scenario "*)
            users=$((users - 1))
            if [ "$users" -eq 0 ]; then
              touch "$FERRY_LAB_HOST3_FREE"
              echo "--- host3's engine is free of the other scenarios at $SECONDS s"
            fi
            ;;
        esac
      done
      echo "--- lane $((lane + 1)) done at $SECONDS s"
      exit $failed
    ) >"$logs/molecule-lane$lane.log" 2>&1 &
    pids+=($!)
  done
  for lane in "${!pids[@]}"; do
    wait "${pids[$lane]}" || status=1
  done
  for lane in "${!lanes[@]}"; do
    cat "$logs/molecule-lane$lane.log"
  done
  return $status
}

# The steps run in a child bash (in a session of their own, see within): give it the functions.
export -f "${all_steps[@]/#/step_}"
export root venv logs python
results=$logs/results
: >"$results"

# run_step STEP: run it within its limit, print its PASS or FAIL line (a FAIL with the first errors and the
# last lines of its log, printed at once), and record the verdict in $results.
run_step() {
  local step=$1 start=$SECONDS log=$logs/$1.log summary why report
  if within "$step" "$log" bash -c "step_$step"; then
    # the step's own summary ("--- step: ..."), else pytest's summary line; a step of several pytest runs
    # (molecule's scenarios) gets their sum
    summary=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '[0-9]+ passed.* in [0-9.]+s' | tr -d '=│' \
      | sed 's/^ *//;s/ *$//' | awk '
          /^--- / { own = $0; next }
          { line = $0; n++; for (i = 2; i <= NF; i++) if ($i ~ /^(passed|skipped)/) sum[$i ~ /^p/ ? "p" : "s"] += $(i - 1) }
          END { if (own != "") print own; else if (n == 1) print line
                else if (n > 1) printf "%d passed%s in %d pytest runs\n", sum["p"], sum["s"] ? ", " sum["s"] " skipped" : "", n }')
    echo "PASS $step ($((SECONDS - start)) s)${summary:+: $summary}"
    echo "PASS $step" >>"$results"
  else
    why=""
    [ -s "$logs/$step.hung" ] && why=": timed out after $(limit_for "$step") s (see the TIMEOUT lines)"
    # The first errors say why far more often than the last lines, which are a molecule scenario's
    # cleanup and destroy: print both.
    report=$(
      echo "FAIL $step ($((SECONDS - start)) s)$why, first errors in tests/output/logs/$step.log:"
      sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -n -A 12 -E '^(E  |FAILED )|fatal: \[|\[ERROR\]|Traceback|CRITICAL|Executed: Failed|(failed|unreachable)=[1-9]' \
        | head -n 80 | sed 's/^/    /'
      echo "  last lines:"
      tail -n 40 "$log" | sed 's/^/    /'
    )
    echo "$report"
    echo "FAIL $step" >>"$results"
  fi
}

# The gates and the unit tests need no lab host: when lab steps run too, they run in a lane of their own
# beside the lab's images and steps (FERRY_SERIAL=1: all in order, one at a time). The benchmark starts only
# once that lane is done, beside molecule.
static=() lab_steps=()
for step in "${steps[@]}"; do
  case $step in
    ruff | ansible-lint | ecosystem | sanity | unit) static+=("$step") ;;
    *) lab_steps+=("$step") ;;
  esac
done
lane=""
if [ "${FERRY_SERIAL:-0}" != 1 ] && [ "${#static[@]}" -gt 0 ] && [ "${#lab_steps[@]}" -gt 0 ]; then
  (for step in "${static[@]}"; do run_step "$step"; done) &
  lane=$!
else
  lab_steps=("${steps[@]}")
fi
if needs integration bench molecule; then
  setup lab-images python lab/lab.py images
fi
bench=""
for step in "${lab_steps[@]}"; do
  if [ "$step" = bench ] && [ -n "$lane" ]; then
    wait "$lane"
    lane=""
  fi
  if [ "$step" = bench ] && [ "${FERRY_SERIAL:-0}" != 1 ] && needs molecule; then
    # At this scale the benchmark asserts no timings: it runs beside molecule's lanes (its rows use host1 and
    # host2 with names of their own, as the scenarios do, and bring the lab up with `--only host1 host2`: host3's
    # engine is migrate's to take away for one test), and its line comes when it ends.
    run_step bench &
    bench=$!
    continue
  fi
  run_step "$step"
done
[ -z "$bench" ] || wait "$bench"
[ -z "$lane" ] || wait "$lane"

passed=$(grep -c '^PASS' "$results")
failed=$(grep -c '^FAIL' "$results")
echo "gates: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
