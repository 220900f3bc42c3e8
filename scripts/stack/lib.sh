# shellcheck shell=bash
# Helpers for scripts/stack/dockerd-up and dockerd-down. Sourced, never run.
# All state lives under $STACK_DIR (default /tmp/remedyd-stack); keep it short,
# unix socket paths are limited to 108 bytes.

STACK_DIR="${STACK_DIR:-/tmp/remedyd-stack}"
ME="$(basename "$0")"

log() { printf '[%s] %s\n' "$ME" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$ME" "$*" >&2; exit 1; }

# Paths of the private dockerd (globals used by the sourcing scripts).
# shellcheck disable=SC2034
stack_paths() {
  mkdir -p "$STACK_DIR" || die "cannot create STACK_DIR=$STACK_DIR"
  STACK_DIR="$(cd "$STACK_DIR" && pwd -P)"
  D="$STACK_DIR/docker"
  SOCK="$D/docker.sock"
  PIDFILE="$D/docker.pid"
  LOGF="$D/dockerd.log"
  EXEC_ROOT="$D/exec"
  DATA_ROOT="$D/data"
  [ "${#D}" -le 60 ] || die "STACK_DIR is too long for unix socket paths: $D"
  mkdir -p "$D"
  export DOCKER_HOST="unix://$SOCK"
  unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH
}

# Serialize up/down runs on fd 9. Daemons we spawn close fd 9 so they never hold it.
stack_lock() {
  exec 9>>"$D/.lock"
  flock -w 300 9 || die "timed out waiting for $D/.lock (another dockerd-up/down running?)"
}

# ---- processes ---------------------------------------------------------------------
# Which processes are this stack's is read from its own files under $EXEC_ROOT, never
# from a match of command lines across the host (a STACK_DIR whose path ends with
# another's would take the other's daemons for its own):
#   dockerd     its pidfile, and it names our exec-root as a whole argument
#   containerd  its pidfile under our exec-root, and it names its config there
#   container   the init.pid in its bundle under our exec-root, and its cgroup names
#               that container's id
#   shim        its working directory is its bundle under our exec-root (the same
#               directory, not the same path: in a chroot, another stack's may read alike)
#
# PID 1 on these machines does not reap orphans: a dead daemon stays a zombie, and
# kill -0 still succeeds on it. So "running" means: /proc/PID exists and its state is
# not Z/X.
pid_running() {
  local pid=$1 stat state
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  state=${stat##*) }
  case "${state%% *}" in Z | X | x) return 1 ;; esac
}

# has_arg PID VALUE: PID runs and one of its arguments is exactly VALUE.
has_arg() {
  local arg
  pid_running "$1" || return 1
  while IFS= read -r -d '' arg; do
    [ "$arg" = "$2" ] && return 0
  done < <(cat "/proc/$1/cmdline" 2>/dev/null)
  return 1
}

# in_cgroup PID ID: PID runs in the cgroup of container ID (cgroupfs or systemd driver).
in_cgroup() {
  pid_running "$1" && grep -qE "[/-]$2(\.scope)?\$" "/proc/$1/cgroup" 2>/dev/null
}

# cwd_is PID DIR: PID runs with DIR as its working directory.
cwd_is() {
  pid_running "$1" && [ "/proc/$1/cwd" -ef "$2" ]
}

# pidfile_pid FILE: print the pid written in FILE.
pidfile_pid() {
  local pid
  pid=$(tr -cd '0-9' 2>/dev/null <"$1") && [ -n "$pid" ] && echo "$pid"
}

# dockerd_pid: print the pid of our running dockerd.
dockerd_pid() {
  local pid
  pid=$(pidfile_pid "$PIDFILE") && has_arg "$pid" "$EXEC_ROOT" && echo "$pid"
}

# stop_pid PID TIMEOUT CHECK [ARG...]: while `CHECK PID ARG...` holds, TERM, then KILL
# after TIMEOUT s (0: KILL at once), bounded. CHECK proves PID is still the process we mean.
stop_pid() {
  local pid=$1 timeout=$2 check=$3 end
  shift 3
  "$check" "$pid" "$@" || return 0
  if [ "$timeout" -gt 0 ]; then
    kill -TERM "$pid" 2>/dev/null || true
    end=$((SECONDS + timeout))
    while "$check" "$pid" "$@"; do
      [ "$SECONDS" -lt "$end" ] || break
      sleep 0.2
    done
    "$check" "$pid" "$@" || return 0
    log "pid $pid still running after ${timeout}s, sending KILL"
  fi
  kill -KILL "$pid" 2>/dev/null || true
  end=$((SECONDS + 10))
  while "$check" "$pid" "$@"; do
    [ "$SECONDS" -lt "$end" ] || die "pid $pid survived KILL"
    sleep 0.2
  done
}

# cleanup_leftovers: after a dockerd died without dockerd-down, end its containers,
# their shims and its containerd (see above for how each is recognised as ours), drop
# the stale containerd pidfile and unmount whatever is left under $D.
cleanup_leftovers() {
  local tasks="$EXEC_ROOT/containerd/daemon/io.containerd.runtime.v2.task"
  local ctr_pidfile="$EXEC_ROOT/containerd/containerd.pid"
  local bundle id pid proc m mounts
  for bundle in "$tasks"/*/*/; do
    [ -d "$bundle" ] || continue
    bundle=${bundle%/}
    id=${bundle##*/}
    if pid=$(pidfile_pid "$bundle/init.pid") && in_cgroup "$pid" "$id"; then
      log "stopping leftover container ${id:0:12} (pid $pid)"
      stop_pid "$pid" 0 in_cgroup "$id"
    fi
    for proc in /proc/[0-9]*; do
      pid=${proc#/proc/}
      cwd_is "$pid" "$bundle" || continue
      log "stopping leftover shim of ${id:0:12} (pid $pid)"
      stop_pid "$pid" 10 cwd_is "$bundle"
    done
  done
  if pid=$(pidfile_pid "$ctr_pidfile") && has_arg "$pid" "$EXEC_ROOT/containerd/containerd.toml"; then
    log "stopping leftover containerd (pid $pid)"
    stop_pid "$pid" 10 has_arg "$EXEC_ROOT/containerd/containerd.toml"
  fi
  # dockerd would take a zombie containerd named in this file as alive and wait for it
  rm -f "$ctr_pidfile"
  mounts=$(awk -v d="$D" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  for m in $mounts; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: cannot unmount $m"
  done
}

# ---- packages ----------------------------------------------------------------------
apt_install() {
  [ "$(id -u)" = 0 ] || die "missing packages ($*); run once as root or: apt-get install -y --no-install-recommends $*"
  command -v apt-get >/dev/null || die "apt-get not found; install by hand: $*"
  local aptlog="$STACK_DIR/apt.log" rc=0 policy=
  local opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=600)
  # without systemd, maintainer scripts would start services via init.d
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy=1
  fi
  log "installing $* (log: $aptlog)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install "${opts[@]}" "$@" </dev/null >>"$aptlog" 2>&1; then
    log "apt-get install failed; running apt-get update and retrying"
    apt-get update -q </dev/null >>"$aptlog" 2>&1 || true
    apt-get install "${opts[@]}" "$@" </dev/null >>"$aptlog" 2>&1 || rc=$?
  fi
  [ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
  if [ "$rc" != 0 ]; then
    tail -n 20 "$aptlog" | sed 's/^/    /' >&2
    die "apt-get install $* failed (exit $rc)"
  fi
}

# static_busybox: print the path of a statically linked busybox.
static_busybox() {
  local b
  for b in /bin/busybox /usr/bin/busybox; do
    [ -x "$b" ] || continue
    # ldd fails on a static binary ("not a dynamic executable")
    ldd "$b" >/dev/null 2>&1 || { echo "$b"; return 0; }
  done
  return 1
}

show_log_tail() {
  [ -s "$LOGF" ] || return 0
  log "last lines of $LOGF:"
  grep -v 'module=grpc' "$LOGF" | tail -n "${STACK_LOG_TAIL:-40}" | sed 's/^/    /' >&2
}
