#!/usr/bin/env bash
# CI: a sharded sweep through a real Slurm (issue 20). Brings up a single-node Slurm on this
# machine (Debian's slurmctld, slurmd, slurm-client and munge; no systemd, so the daemons run
# in the background of this script and are stopped by their recorded PIDs on exit), writes and
# submits a 4-shard job array of configs/quickstart.yaml with `driftsweep slurm --submit`,
# waits for the array and the merge job, and compares the merged report's metrics with a
# single-process run. Then it deletes one shard's pair and re-submits: only that shard runs.
#
# Needs root (apt-get) and the release binary (`cargo build --release`). Any failure, apt-get
# included, fails the script: it never skips.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
bin="$repo/target/release/driftsweep"
[ -x "$bin" ] || { echo "ci_test.sh: $bin missing: run cargo build --release first" >&2; exit 1; }
started=$(date +%s)

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    echo "== installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi
for c in munged slurmctld slurmd sbatch squeue scontrol sinfo python3; do
    command -v "$c" >/dev/null || { echo "ci_test.sh: $c not found after install" >&2; exit 1; }
done

tmp=$(mktemp -d /tmp/driftsweep-slurm.XXXXXX)
pids=()
cleanup() {
    local rc=$?
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "$rc" -ne 0 ]; then
        echo "== FAILED (exit $rc); daemon logs:" >&2
        tail -n 30 "$tmp"/*.log >&2 2>/dev/null || true
        tail -n 30 "$tmp"/results/*.shards/slurm/logs/* >&2 2>/dev/null || true
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT

# munge with its own key and socket.
mkdir -p "$tmp/munge" "$tmp/state" "$tmp/spool"
chmod 700 "$tmp/munge"
dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$tmp/munge/munge.key"
sock="$tmp/munge/munge.sock"
munged -F --force --key-file="$tmp/munge/munge.key" --socket="$sock" \
    --pid-file="$tmp/munge/munged.pid" --seed-file="$tmp/munge/munge.seed" \
    --log-file="$tmp/munged.log" 2>>"$tmp/munged.log" &
pids+=($!)
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { echo "munged did not open $sock" >&2; exit 1; }

port=$((20000 + RANDOM % 20000))
export SLURM_CONF="$tmp/slurm.conf"
cat >"$SLURM_CONF" <<EOF
ClusterName=driftsweep-ci
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerParameters=batch_sched_delay=0
DependencyParameters=kill_invalid_depend
MinJobAge=600
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=ci Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -D -f "$SLURM_CONF" >>"$tmp/slurmctld.log" 2>&1 &
pids+=($!)
slurmd -D -N localhost -f "$SLURM_CONF" >>"$tmp/slurmd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    state=$(sinfo -h -n localhost -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 0.2
done
[ "$state" = idle ] || { echo "the node did not come up (state: ${state:-none})" >&2; exit 1; }
echo "== slurm up after $(( $(date +%s) - started )) s"

export RAYON_NUM_THREADS=1
cfg=configs/quickstart.yaml
out="$tmp/results/quickstart"

# Waits until the jobs have left the queue and prints each one's state and exit code.
wait_jobs() {
    local deadline=$(( $(date +%s) + 600 ))
    while [ -n "$(squeue -h -j "$1" -o %i 2>/dev/null)" ]; do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "jobs $1 still queued after 600 s" >&2; squeue >&2; exit 1; }
        sleep 0.5
    done
    # One line per job or array task: JobId, ArrayTaskId, JobState, ExitCode (sacct needs
    # slurmdbd, so the state comes from the controller, which keeps it for MinJobAge).
    for j in ${1//,/ }; do
        scontrol -o show job "$j" | awk '{
            for (i = 1; i <= NF; i++) { split($i, kv, "=")
                if (kv[1] ~ /^(JobId|ArrayTaskId|JobState|ExitCode)$/) printf "%s ", $i }
            print "" }'
    done
}
job_ids() { sed -n 's/^\(array\|merge\) job \([0-9]*\).*/\2/p' | paste -sd, -; }
# Every job listed must be COMPLETED with exit code 0.
check_completed() {
    local states=$1
    echo "$states"
    if echo "$states" | grep -v 'JobState=COMPLETED.*ExitCode=0:0' | grep -q .; then
        echo "a job did not complete" >&2; exit 1
    fi
}

echo "== submitting 4 shards (2 at a time) and the merge"
t0=$(date +%s)
submitted=$("$bin" slurm "$cfg" --shards 4 --parallel 2 --cpus-per-task 1 --out "$out" --submit)
echo "$submitted"
ids=$(echo "$submitted" | job_ids)
[ -n "$ids" ] || { echo "no job ids in the output of driftsweep slurm --submit" >&2; exit 1; }
states=$(wait_jobs "$ids")
check_completed "$states"
echo "== array + merge finished in $(( $(date +%s) - t0 )) s"
grep -q 'array=0-3%2' "$out.shards/slurm/shards.sbatch"

echo "== single-process run"
"$bin" run "$cfg" --out "$tmp/single" --no-progress | tail -n 2

compare() {
    python3 - "$tmp/single/report.json" "$out/report.json" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
pa = {p["id"]: (p["verdict"], p["metrics"]) for p in a["pairs"]}
pb = {p["id"]: (p["verdict"], p["metrics"]) for p in b["pairs"]}
assert pa.keys() == pb.keys(), "different pairs"
diff = [k for k in pa if pa[k] != pb[k]]
assert not diff, f"metrics differ: {diff}"
for k in ("verdict", "counts", "drift_characterization", "observations"):
    assert a[k] == b[k], k
assert b["merged"]["count"] == 4 and not b["merged"]["missing_pairs"], b["merged"]
print(f"metrics equal: {len(pa)} pairs, verdict {b['verdict']} in both")
EOF
}
compare

echo "== re-submission after losing one pair of shard 2: only shard 2 runs"
victims=("$out.shards/2-of-4/pairs/"*.json)
rm "${victims[0]}"
before=$(ls "$out.shards"/{0,1,3}-of-4/runs/*.json | xargs stat -c %Y | sort -n | tail -n 1)
submitted=$("$bin" slurm "$cfg" --shards 4 --parallel 2 --cpus-per-task 1 --out "$out" --submit)
echo "$submitted"
echo "$submitted" | grep -q -- '--array=2%2'
states=$(wait_jobs "$(echo "$submitted" | job_ids)")
check_completed "$states"
after=$(ls "$out.shards"/{0,1,3}-of-4/runs/*.json | xargs stat -c %Y | sort -n | tail -n 1)
[ "$before" = "$after" ] || { echo "finished shards were touched" >&2; exit 1; }
sessions=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['sessions']))" "$out.shards/2-of-4/manifest.json")
[ "$sessions" = 2 ] || { echo "shard 2 has $sessions sessions, expected 2 (resumed)" >&2; exit 1; }
compare

echo "== a failing task holds the merge back and kill_invalid_depend cancels it"
rm -rf "$out.shards/1-of-4"
mkdir -p "$out.shards/1-of-4" && echo '{' >"$out.shards/1-of-4/manifest.json"
submitted=$("$bin" slurm "$cfg" --shards 4 --cpus-per-task 1 --out "$out" --submit)
states=$(wait_jobs "$(echo "$submitted" | job_ids)")
echo "$states"
echo "$states" | grep -q 'ArrayTaskId=1 JobState=FAILED ExitCode=2:0'
echo "$states" | grep -v ArrayTaskId | grep -q 'JobState=CANCELLED'

echo "== PASS: Slurm CI test in $(( $(date +%s) - started )) s"
