# shellcheck shell=bash
# Helpers for scripts/stack/prometheus-* and alertmanager-* (Debian packages, detached daemons, locks). Sourced, never run.
# Nothing here writes next to the scripts: all state goes under $STACK_DIR.

STACK_DIR="${STACK_DIR:-/tmp/remedyd-stack}"
_STACK_SELF="$(basename "$0")"

log() { printf '[%s] %s\n' "$_STACK_SELF" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$_STACK_SELF" "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }

# Make STACK_DIR absolute and existing (sockets and pidfiles need absolute paths).
stack_init() {
  mkdir -p "$STACK_DIR" 2>/dev/null || die "cannot create STACK_DIR=$STACK_DIR (set STACK_DIR to a writable directory)"
  STACK_DIR="$(cd "$STACK_DIR" && pwd -P)" || die "cannot enter STACK_DIR=$STACK_DIR"
  export STACK_DIR
}

# ---- cleanup on exit -------------------------------------------------------
_STACK_CLEANUPS=()
_stack_run_cleanups() {
  local i
  for ((i = ${#_STACK_CLEANUPS[@]} - 1; i >= 0; i--)); do eval "${_STACK_CLEANUPS[i]}" || true; done
}
on_exit() { _STACK_CLEANUPS+=("$1"); }
trap _stack_run_cleanups EXIT

# ---- locking ---------------------------------------------------------------
# take_lock FILE [TIMEOUT]: exclusive lock on fd 9 until the script exits.
# (spawn closes fd 9 and fd 8 so that daemons never inherit a lock.)
take_lock() {
  local f=$1 t=${2:-600}
  exec 9>>"$f" || die "cannot open lock file $f"
  flock -w "$t" 9 || die "timed out after ${t}s waiting for lock $f (another stack script is running?)"
}

# ---- processes -------------------------------------------------------------
# proc_has PID NEEDLE: PID is alive (not a zombie) and its command line contains NEEDLE.
proc_has() {
  local pid=$1 needle=$2 args=()
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  mapfile -d '' -t args <"/proc/$pid/cmdline" 2>/dev/null || return 1
  [ ${#args[@]} -gt 0 ] || return 1 # zombie or kernel thread
  [[ "${args[*]}" == *"$needle"* ]]
}

# live_pid PIDFILE NEEDLE: print the pid in PIDFILE if that process is alive and is ours.
live_pid() {
  local p
  [ -r "$1" ] || return 1
  p=$(tr -cd '0-9' <"$1")
  proc_has "$p" "$2" || return 1
  printf '%s\n' "$p"
}

# stop_pid PID NEEDLE TIMEOUT WHAT: TERM, wait TIMEOUT s, then KILL (only if still ours).
stop_pid() {
  local pid=$1 needle=$2 t=$3 what=$4 deadline
  proc_has "$pid" "$needle" || return 0
  log "stopping $what (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + t))
  while proc_has "$pid" "$needle"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "$what (pid $pid) still running after ${t}s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 10))
      while proc_has "$pid" "$needle"; do
        [ "$SECONDS" -ge "$deadline" ] && die "$what (pid $pid) survived KILL"
        sleep 0.2
      done
      return 0
    fi
    sleep 0.2
  done
}

# spawn LOGFILE CMD...: start CMD detached from our session and terminal, stdin from
# /dev/null, stdout+stderr appended to LOGFILE, lock fds closed. Sets SPAWNED_PID.
# (A background child of a non-interactive shell is not a process-group leader, so
# setsid does not fork and $! is the daemon's own pid.)
spawn() {
  local logf=$1
  shift
  if command -v setsid >/dev/null 2>&1; then
    setsid "$@" </dev/null >>"$logf" 2>&1 8>&- 9>&- &
  else
    nohup "$@" </dev/null >>"$logf" 2>&1 8>&- 9>&- &
  fi
  # shellcheck disable=SC2034 # read by the calling script
  SPAWNED_PID=$!
}

# fail_with_log MESSAGE LOGFILE: print MESSAGE and the log's tail on stderr, exit 1.
fail_with_log() {
  printf '[%s] ERROR: %s\n' "$_STACK_SELF" "$1" >&2
  if [ -s "$2" ]; then
    # the lines since the last start marker, without gRPC connection chatter
    printf '[%s] last lines of %s:\n' "$_STACK_SELF" "$2" >&2
    awk '/^===== .* starting /{n=0; delete buf} {buf[++n]=$0} END{for(i=1;i<=n;i++) print buf[i]}' "$2" |
      grep -v 'module=grpc' | tail -n "${STACK_LOG_TAIL:-40}" | sed 's/^/    /' >&2
  fi
  exit 1
}

# ---- network ---------------------------------------------------------------
# port_busy PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

valid_port() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }

# need_curl: make sure curl exists (installs it when root).
need_curl() { command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates; }

# http_ok URL: GET URL answers 2xx within 2 s.
http_ok() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }

# http_post URL: POST with an empty body; prints the answer body; fails unless 2xx.
http_post() {
  local out code
  out=$(curl -sS --max-time 30 -X POST -w '\n%{http_code}' "$1" 2>&1) || { printf '%s\n' "$out"; return 1; }
  code=${out##*$'\n'}
  printf '%s\n' "${out%$'\n'*}"
  [[ "$code" == 2* ]]
}

# wait_http_ready URL TIMEOUT PID LOGFILE WHAT
wait_http_ready() {
  local url=$1 t=$2 pid=$3 logf=$4 what=$5 deadline=$((SECONDS + $2))
  while ! http_ok "$url"; do
    kill -0 "$pid" 2>/dev/null || fail_with_log "$what exited during startup (see $logf)" "$logf"
    [ "$SECONDS" -ge "$deadline" ] && fail_with_log "$what not ready after ${t}s at $url (see $logf)" "$logf"
    sleep 0.2
  done
}

# ---- packages --------------------------------------------------------------
# apt_install PKG...: install Debian packages quietly, without recommends, never
# starting their services. Root only. `apt-get update` runs only if the first
# attempt fails. Serialized between stack scripts by a lock in /var/lock.
apt_install() {
  is_root || die "needed Debian packages missing: $*; run as root once, or: sudo apt-get install -y --no-install-recommends $*"
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install by hand: $*"
  local aptlog="$STACK_DIR/apt.log" lockf=/var/lock/remedyd-stack-apt.lock rc=0 t0=$SECONDS
  local opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=600
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  [ -d /var/lock ] || lockf="$STACK_DIR/apt.lock"
  exec 8>>"$lockf" || die "cannot open $lockf"
  flock -w 1200 8 || die "timed out waiting for another stack apt-get run ($lockf)"
  # Without systemd the packages' maintainer scripts would call the sysv init
  # scripts (docker.io ships /etc/init.d/docker). policy-rc.d exit 101 = "do not start".
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# temporary, from %s: do not start services during install\nexit 101\n' "$_STACK_SELF" >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    on_exit 'rm -f /usr/sbin/policy-rc.d'
  fi
  log "installing Debian packages: $* (log: $aptlog)"
  if ! DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 NEEDRESTART_MODE=l \
    apt-get install "${opts[@]}" "$@" >>"$aptlog" 2>&1 </dev/null; then
    log "apt-get install failed; running apt-get update and retrying"
    DEBIAN_FRONTEND=noninteractive apt-get update -q -o DPkg::Lock::Timeout=600 >>"$aptlog" 2>&1 </dev/null || true
    DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 NEEDRESTART_MODE=l \
      apt-get install "${opts[@]}" "$@" >>"$aptlog" 2>&1 </dev/null || rc=$?
  fi
  flock -u 8
  exec 8>&-
  if [ "$rc" != 0 ]; then
    tail -n 25 "$aptlog" | sed 's/^/    /' >&2
    die "apt-get install $* failed (exit $rc); full log: $aptlog"
  fi
  log "installed $* in $((SECONDS - t0))s"
}

# find_bin NAME...: first NAME found in PATH or the sbin/bin dirs; prints its path.
find_bin() {
  local n d
  for n in "$@"; do
    if command -v "$n" >/dev/null 2>&1; then command -v "$n"; return 0; fi
    for d in /usr/sbin /usr/bin /sbin /bin /usr/local/sbin /usr/local/bin; do
      [ -x "$d/$n" ] && { printf '%s\n' "$d/$n"; return 0; }
    done
  done
  return 1
}

# yaml_quote STRING: single-quoted YAML scalar.
yaml_quote() { printf "'%s'" "${1//\'/\'\'}"; }

# down_instances NAME [PORT...]: stop $STACK_DIR/NAME-PORT instances started by
# NAME-up (all of them when no PORT is given). Logs and configs are kept.
down_instances() {
  local name=$1 dir port pid conf found=
  shift
  stack_init
  local dirs=()
  if [ $# -gt 0 ]; then
    for port in "$@"; do
      valid_port "$port" || die "bad PORT '$port'"
      dirs+=("$STACK_DIR/$name-$port")
    done
  else
    for dir in "$STACK_DIR/$name"-*; do [ -d "$dir" ] && dirs+=("$dir"); done
  fi
  for dir in "${dirs[@]}"; do
    [ -d "$dir" ] || { log "$name on port ${dir##*-}: nothing to stop"; continue; }
    take_lock "$dir/.lock" 120
    conf="$dir/$name.yml"
    if pid=$(live_pid "$dir/$name.pid" "$conf"); then
      stop_pid "$pid" "$conf" "${STACK_STOP_TIMEOUT:-15}" "$name on port ${dir##*-}"
      found=1
    else
      log "$name on port ${dir##*-}: not running"
    fi
    rm -f "$dir/$name.pid"
    flock -u 9
  done
  [ -n "$found" ] || [ ${#dirs[@]} -gt 0 ] || log "no $name instances under $STACK_DIR"
  return 0
}

# children_of PID: pids whose parent is PID (from /proc, no procps needed).
children_of() {
  local st line f
  for st in /proc/[0-9]*/stat; do
    read -r line <"$st" 2>/dev/null || continue
    read -r -a f <<<"${line##*) }" # fields after "(comm) ": state ppid ...
    [ "${f[1]:-}" = "$1" ] && { st=${st#/proc/}; printf '%s\n' "${st%/stat}"; }
  done
  return 0
}

# unmount_under DIR: unmount everything mounted at or below DIR, deepest first.
unmount_under() {
  local d=${1%/} m
  local mnts=()
  mapfile -t mnts < <(awk -v d="$d" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  for m in "${mnts[@]}"; do
    m=$(printf '%b' "${m//\\/\\0}") # mountinfo writes a space as \040
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: could not unmount $m"
  done
}

# dockerd_leftovers D: after the dockerd of state dir D died without dockerd-down,
# end what it left: its containerd, its containers' processes and their shims
# (all recognised by D's exec-root in their command lines), then unmount D's mounts.
dockerd_leftovers() {
  local D=$1 ctrd="$1/exec/containerd" p c
  if p=$(live_pid "$ctrd/containerd.pid" "$ctrd"); then
    stop_pid "$p" "$ctrd" 10 "leftover containerd"
  fi
  # a zombie answers kill -0 and dockerd would wait for it: drop the pidfile
  rm -f "$ctrd/containerd.pid"
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    proc_has "$p" "-address $ctrd/containerd.sock" || continue
    for c in $(children_of "$p"); do kill -KILL "$c" 2>/dev/null || true; done
    stop_pid "$p" "-address $ctrd/containerd.sock" 5 "leftover containerd-shim"
  done
  unmount_under "$D"
}
