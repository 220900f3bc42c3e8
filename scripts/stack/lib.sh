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
# PID 1 on these machines does not reap orphans: a dead daemon stays a zombie, and
# kill -0 still succeeds on it. So "alive" means: /proc/PID exists, state is not Z/X,
# and the command line (empty for zombies) contains NEEDLE.
pid_alive() {
  local pid=$1 needle=${2:-} stat state cmd
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  state=${stat##*) }
  state=${state%% *}
  case "$state" in Z | X | x) return 1 ;; esac
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [ -n "$cmd" ] || return 1
  [[ "$cmd" == *"$needle"* ]]
}

# pidfile_alive FILE NEEDLE: print the pid from FILE if it is alive and ours.
pidfile_alive() {
  local pid
  [ -r "$1" ] || return 1
  pid=$(tr -cd '0-9' <"$1") || return 1
  pid_alive "$pid" "$2" || return 1
  echo "$pid"
}

# stop_pid PID NEEDLE TIMEOUT: TERM, wait up to TIMEOUT s, then KILL (bounded).
stop_pid() {
  local pid=$1 needle=$2 end=$((SECONDS + $3))
  pid_alive "$pid" "$needle" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  while pid_alive "$pid" "$needle"; do
    if [ "$SECONDS" -ge "$end" ]; then
      log "pid $pid still running after ${3}s, sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      end=$((SECONDS + 10))
      while pid_alive "$pid" "$needle"; do
        [ "$SECONDS" -lt "$end" ] || die "pid $pid survived KILL"
        sleep 0.2
      done
      return 0
    fi
    sleep 0.2
  done
}

# pids_matching NEEDLE: live pids whose command line contains NEEDLE.
pids_matching() {
  local p
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = "$$" ] && continue
    pid_alive "$p" "$1" && echo "$p"
  done
  return 0
}

# children PID: pids whose parent is PID.
children() {
  local f stat rest
  for f in /proc/[0-9]*/stat; do
    stat=$(cat "$f" 2>/dev/null) || continue
    rest=${stat##*) }          # "STATE PPID ..."
    rest=${rest#* }
    [ "${rest%% *}" = "$1" ] && { f=${f#/proc/}; echo "${f%/stat}"; }
  done
  return 0
}

# cleanup_leftovers: after a dockerd died without dockerd-down, end its containerd,
# shims and container processes (recognised by our exec-root in their command line),
# drop the stale containerd pidfile and unmount whatever is left under $D.
cleanup_leftovers() {
  local p c m mounts
  for p in $(pids_matching "$EXEC_ROOT/containerd"); do
    for c in $(children "$p"); do
      # the shims' children are the containers' init processes
      pid_alive "$c" "$EXEC_ROOT" || kill -KILL "$c" 2>/dev/null || true
    done
    log "stopping leftover $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-60)... (pid $p)"
    stop_pid "$p" "$EXEC_ROOT" 10
  done
  # dockerd would take a zombie containerd named in this file as alive and wait for it
  rm -f "$EXEC_ROOT/containerd/containerd.pid"
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
