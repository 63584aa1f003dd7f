#!/usr/bin/env bash
# A single-node SLURM cluster on localhost, from Debian 12's packages, for running the workflow
# through profiles/slurm end to end (tests/test_slurm_cluster.py, docs/slurm.md).
#
#   tools/slurm/cluster.sh install [--accounting]   # apt-get update + install the packages (root)
#   tools/slurm/cluster.sh start   [--accounting]   # write the configuration, start every daemon
#   eval "$(tools/slurm/cluster.sh env)"            # export SLURM_CONF and PATH (client wrappers)
#   tools/slurm/cluster.sh status                   # daemons, sinfo, status command to use
#   tools/slurm/cluster.sh stop                     # stop the daemons started by `start`, by PID
#
# Without --accounting: munged, slurmctld and slurmd; AccountingStorageType=accounting_storage/none,
# so `sacct` cannot report job states and profiles/slurm reads them with `squeue`. With
# --accounting: mariadbd and slurmdbd as well (job accounting in MariaDB), and `sacct` works too.
#
# Everything lives in one folder, $UNIALIGN_SLURM_DIR (default: ${TMPDIR:-/tmp}/unialign-slurm):
# slurm.conf, slurmdbd.conf, the munge key and socket, state, spool, logs (log/), the MariaDB data
# folder and pids (one "name pid" line per daemon); `stop` leaves it for its logs, `start` replaces
# it. Nothing under /etc is read or changed and no service manager is used: each daemon is started
# in the foreground by its own command, in its own session, and `stop` ends exactly the PIDs
# recorded in that file (SIGTERM, SIGKILL after 30 s). Every daemon listens on 127.0.0.1
# only (CommunicationParameters=NoCtldInAddrAny,NoInAddrAny; MariaDB --bind-address; munge and
# MariaDB's admin socket are Unix sockets).
# Run as root (the daemons, and the jobs, run as root). Ports: $UNIALIGN_SLURM_PORT (slurmctld,
# default 6817), +1 slurmd, +2 slurmdbd, +3 MariaDB.
set -euo pipefail

DIR="${UNIALIGN_SLURM_DIR:-${TMPDIR:-/tmp}/unialign-slurm}"
PORT="${UNIALIGN_SLURM_PORT:-6817}"
CLUSTER=unialign
PARTITION=debug
ACCOUNT=unialign
HOST="$(hostname -s)"
DB_PASSWORD=unialign-slurmdbd     # loopback-only database of a throw-away cluster

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
log() { printf '[slurm-localhost] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

accounting=0
cmd="${1:-}"; [ $# -gt 0 ] && shift
for arg in "$@"; do
    case "$arg" in
        --accounting) accounting=1 ;;
        -h|--help) usage ;;
        *) die "unknown argument: $arg" ;;
    esac
done

need_root() { [ "$(id -u)" = 0 ] || die "run as root"; }

# running, and not a zombie waiting to be reaped
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null && ! ps -o stat= -p "$1" | grep -q '^Z'; }

pid_of() { [ -f "$DIR/pids" ] && awk -v n="$1" '$1 == n {print $2}' "$DIR/pids" | tail -1 || true; }

# start NAME COMMAND...: run COMMAND in the foreground of its own session, log to log/NAME.out,
# record its PID
spawn() {
    local name="$1"; shift
    setsid "$@" >"$DIR/log/$name.out" 2>&1 </dev/null &
    local pid=$!
    echo "$name $pid" >>"$DIR/pids"
    log "started $name (pid $pid)"
}

# wait_for WHAT SECONDS COMMAND...: retry COMMAND until it succeeds
wait_for() {
    local what="$1" seconds="$2"; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            log "$what did not come up within ${seconds}s; last lines of its logs:"
            tail -n 20 "$DIR"/log/*.out "$DIR"/log/*.log 2>/dev/null >&2 || true
            die "$what is not ready"
        fi
        sleep 0.5
    done
}

# check that a daemon spawned a moment ago is still alive
check_alive() {
    local name="$1" pid
    pid="$(pid_of "$name")"
    alive "$pid" || { tail -n 30 "$DIR/log/$name.out" >&2 || true; die "$name exited at start"; }
}

install_packages() {
    need_root
    local pkgs=(munge slurmctld slurmd slurm-client)
    [ "$accounting" = 1 ] && pkgs+=(slurmdbd mariadb-server)
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${pkgs[@]}"
}

write_slurm_conf() {
    local cpus mem storage
    cpus="$(nproc)"
    # leave a little memory to the system; memory is a consumable resource (CR_Core_Memory)
    mem="$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)"
    if [ "$accounting" = 1 ]; then
        storage="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((PORT + 2))
# the munge socket for talking to slurmdbd (AuthInfo covers slurmctld and slurmd only)
AccountingStoragePass=$DIR/munge/munge.socket
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
    else
        storage="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
    fi
    cat >"$DIR/slurm.conf" <<EOF
# written by tools/slurm/cluster.sh: single node, loopback only, no cgroups
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
# bind to the node's own address (127.0.0.1 below) instead of every interface
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# finished jobs stay visible to squeue for 300 s (SLURM's default, written out): the profile's
# squeue status checks (every 5-180 s) see every end state
MinJobAge=300
JobCompType=jobcomp/none
$storage
NodeName=$HOST NodeAddr=127.0.0.1 NodeHostname=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

# The client commands find this cluster through SLURM_CONF. Snakemake's job step (plugin
# snakemake-executor-plugin-slurm-jobstep) removes every SLURM_* variable from the environment of
# the srun it starts inside a job, so that srun would look for /etc/slurm/slurm.conf; bin/ holds
# wrappers that set SLURM_CONF again, and `env` puts bin/ first on PATH (jobs inherit PATH).
write_client_shims() {
    local tool real
    mkdir -p "$DIR/bin"
    for tool in srun sbatch squeue scancel scontrol sinfo sacct sacctmgr sshare; do
        real="$(PATH="${PATH//$DIR\/bin:/}" command -v "$tool" || true)"
        [ -n "$real" ] || continue
        printf '#!/bin/sh\nSLURM_CONF=%s/slurm.conf exec %s "$@"\n' "$DIR" "$real" >"$DIR/bin/$tool"
        chmod 755 "$DIR/bin/$tool"
    done
}

write_slurmdbd_conf() {
    cat >"$DIR/slurmdbd.conf" <<EOF
# written by tools/slurm/cluster.sh
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
DbdHost=$HOST
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
# bind to DbdAddr only, not every interface
CommunicationParameters=NoInAddrAny
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 3))
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/slurmdbd.conf"
}

start_mariadb() {
    local sql="$DIR/mysql.sock"
    mkdir -p "$DIR/mysql"
    log "initialising MariaDB in $DIR/mysql"
    mariadb-install-db --no-defaults --datadir="$DIR/mysql" --user=root \
        --auth-root-authentication-method=socket --skip-test-db >"$DIR/log/mariadb-install.out" 2>&1 \
        || { tail -n 30 "$DIR/log/mariadb-install.out" >&2; die "mariadb-install-db failed"; }
    spawn mariadbd mariadbd --no-defaults --user=root --datadir="$DIR/mysql" --socket="$sql" \
        --bind-address=127.0.0.1 --port=$((PORT + 3)) --pid-file="$DIR/run/mariadbd.pid" \
        --log-error="$DIR/log/mariadbd.log" --innodb-buffer-pool-size=256M \
        --innodb-lock-wait-timeout=900 --skip-name-resolve
    wait_for mariadbd 60 mariadb --no-defaults --socket="$sql" -u root -e "SELECT 1"
    mariadb --no-defaults --socket="$sql" -u root <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

start_cluster() {
    need_root
    for bin in munged mungekey slurmctld slurmd sinfo squeue sbatch; do
        command -v "$bin" >/dev/null || die "$bin not found: run '$0 install' first"
    done
    if [ "$accounting" = 1 ]; then
        for bin in slurmdbd sacctmgr mariadbd mariadb-install-db; do
            command -v "$bin" >/dev/null || die "$bin not found: run '$0 install --accounting' first"
        done
    fi
    if [ -f "$DIR/pids" ]; then
        while read -r name pid; do
            alive "$pid" && die "$name (pid $pid) from an earlier start is still running: '$0 stop' first"
        done <"$DIR/pids"
    fi
    # the folder is reused only if it is one of ours (never wipe a folder given by mistake)
    if [ -d "$DIR" ] && [ -n "$(ls -A "$DIR")" ] && [ ! -f "$DIR/.unialign-slurm" ]; then
        die "$DIR exists and was not made by this script: choose another UNIALIGN_SLURM_DIR"
    fi
    rm -rf "$DIR"
    mkdir -p "$DIR"/{state,spool,run,log,munge}
    : >"$DIR/.unialign-slurm"
    chmod 700 "$DIR" "$DIR/munge"
    : >"$DIR/pids"
    echo "$accounting" >"$DIR/accounting"
    # a failed start stops whatever it had started
    trap 'log "start failed: stopping the daemons started so far"; stop_cluster' ERR EXIT

    # munge: own key, own socket (no /etc/munge, no system munged)
    mungekey --create --keyfile="$DIR/munge/munge.key" --force
    chmod 400 "$DIR/munge/munge.key"
    spawn munged munged --foreground --force --key-file="$DIR/munge/munge.key" \
        --socket="$DIR/munge/munge.socket" --pid-file="$DIR/run/munged.pid" \
        --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"
    wait_for munged 20 sh -c "munge --socket='$DIR/munge/munge.socket' -n | unmunge --socket='$DIR/munge/munge.socket'"

    write_slurm_conf
    export SLURM_CONF="$DIR/slurm.conf"
    write_client_shims

    if [ "$accounting" = 1 ]; then
        start_mariadb
        write_slurmdbd_conf
        # slurmdbd reads slurmdbd.conf from the folder of $SLURM_CONF
        spawn slurmdbd slurmdbd -D
        wait_for slurmdbd 60 sacctmgr -n list cluster
        sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
        sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="unialign-bench" \
            Organization=unialign >/dev/null 2>&1 || true
        sacctmgr -i add user root Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null 2>&1 || true
    fi

    spawn slurmctld slurmctld -D -f "$DIR/slurm.conf"
    sleep 1; check_alive slurmctld
    wait_for slurmctld 60 scontrol ping
    spawn slurmd slurmd -D -f "$DIR/slurm.conf" -N "$HOST"
    sleep 1; check_alive slurmd
    wait_for "node $HOST" 60 sh -c "sinfo -h -N -o '%T' | grep -Eq '^(idle|mixed|allocated)'"
    # NoInAddrAny binds to the address the node's name resolves to: say so if that is not loopback
    if command -v ss >/dev/null; then
        local wide
        wide="$(ss -Hltnp 2>/dev/null | grep -E '"(slurmctld|slurmd|slurmdbd|mariadbd)"' | awk '{print $4}' \
            | grep -v '^127\.0\.0\.1:' || true)"
        [ -z "$wide" ] || log "warning: listening beyond 127.0.0.1: $(echo $wide); map '$HOST' to 127.0.0.1 in /etc/hosts"
    fi
    log "cluster '$CLUSTER' is up: partition '$PARTITION' on node '$HOST' ($(nproc) CPUs)"
    log "accounting: $([ "$accounting" = 1 ] && echo "slurmdbd + MariaDB (account '$ACCOUNT')" || echo none)"
    log "now run: eval \"\$($0 env)\""
    trap - ERR EXIT
}

stop_cluster() {
    [ -f "$DIR/pids" ] || { log "nothing to stop ($DIR/pids does not exist)"; return 0; }
    if alive "$(pid_of slurmctld)"; then
        SLURM_CONF="$DIR/slurm.conf" scancel --full --signal=KILL --state=RUNNING -u "$(id -un)" 2>/dev/null || true
        SLURM_CONF="$DIR/slurm.conf" scancel -u "$(id -un)" 2>/dev/null || true
    fi
    # the reverse of the start order: slurmd, slurmctld, slurmdbd, mariadbd, munged
    local name pid i
    for name in slurmd slurmctld slurmdbd mariadbd munged; do
        pid="$(pid_of "$name")"
        alive "$pid" || continue
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 60); do alive "$pid" || break; sleep 0.5; done
        if alive "$pid"; then
            log "$name (pid $pid) did not stop within 30 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped $name (pid $pid)"
    done
    mv "$DIR/pids" "$DIR/pids.stopped"
}

show_status() {
    [ -f "$DIR/pids" ] || { echo "not running (no $DIR/pids)"; return 1; }
    local ok=0 name pid
    while read -r name pid; do
        if alive "$pid"; then echo "$name: running (pid $pid)"; else echo "$name: NOT running (pid $pid)"; ok=1; fi
    done <"$DIR/pids"
    export SLURM_CONF="$DIR/slurm.conf"
    sinfo || ok=1
    if [ "$(cat "$DIR/accounting" 2>/dev/null)" = 1 ]; then
        echo "accounting: slurmdbd (slurm-status-command sacct or squeue)"
    else
        echo "accounting: none (slurm-status-command squeue)"
    fi
    return $ok
}

case "$cmd" in
    install) install_packages ;;
    start) start_cluster ;;
    stop) stop_cluster ;;
    status) show_status ;;
    env) echo "export SLURM_CONF=$DIR/slurm.conf PATH=$DIR/bin:\$PATH" ;;
    -h|--help|help) usage ;;
    *) usage 2 ;;
esac
