#!/usr/bin/env bash
# ftproxy re-seed recipe for Redis (reseed.command), using Redis's own replication.
#
#   reseed:
#     command: [./config/reseed-redis.sh]
#
# The front runs it with FTPROXY_RESEED_SOURCE_ADDRESS and FTPROXY_RESEED_TARGET_ADDRESS
# (host:port or [v6]:port); a password, if any, comes from REDISCLI_AUTH (the same for
# both; the target then needs masterauth in its own config). FTPROXY_RESEED_TIMEOUT_MS
# (default 60000) bounds the prepare phase and, separately, the cut.
#
# Prepare: REPLICAOF source on the target, wait for the full sync, print `ready`.
# Cut (a line `cut` on stdin; the front holds client input and the source is idle): wait
# until the target has processed the source's whole replication stream and holds as many
# keys, then REPLICAOF NO ONE. Exit 0 = the target equals the source.
# Any failure, or stdin closed before `cut`: the target is detached from the source again
# (it stays out of service: the front keeps it stale), one line on stderr, exit 1.
set -euo pipefail
export LC_ALL=C # EPOCHREALTIME with a '.', byte-wise regexes

readonly PREPARE_POLL_S=0.05
# `ready` once the target is at most this far behind the source (bytes of replication
# stream): what is left then is all the cut waits for, under the front's hold.
readonly READY_LAG=262144

fail_line () { # one line, whatever redis-cli printed
  local m=${*//$'\r'/}
  printf 'reseed-redis: %s\n' "${m//$'\n'/ | }" >&2
}

split_addr () { # $1 what, $2 host:port | [v6]:port -> ADDR_HOST ADDR_PORT
  if [[ $2 =~ ^\[([^]]+)\]:([0-9]+)$ || $2 =~ ^([^:]+):([0-9]+)$ ]]; then
    ADDR_HOST=${BASH_REMATCH[1]} ADDR_PORT=${BASH_REMATCH[2]}
  else
    fail_line "$1 address '$2' is not host:port"
    exit 2
  fi
}

split_addr source "${FTPROXY_RESEED_SOURCE_ADDRESS:-}"
readonly SRC_HOST=$ADDR_HOST SRC_PORT=$ADDR_PORT
split_addr target "${FTPROXY_RESEED_TARGET_ADDRESS:-}"
readonly TGT_HOST=$ADDR_HOST TGT_PORT=$ADDR_PORT
readonly TIMEOUT_MS=${FTPROXY_RESEED_TIMEOUT_MS:-60000}
if ! [[ $TIMEOUT_MS =~ ^[1-9][0-9]*$ ]]; then
  fail_line "FTPROXY_RESEED_TIMEOUT_MS '$TIMEOUT_MS' is not a positive integer"
  exit 2
fi

REPLICATING=0 # REPLICAOF was (or may have been) sent: any failure must undo it
FAILED=0
DEADLINE=0    # ms since the epoch; each phase sets its own
OLD_DELAY=''  # repl-diskless-sync-delay before we changed it ('' = unchanged)

now_ms () { local us=${EPOCHREALTIME/./}; NOW=$((us / 1000)); }

# redis-cli bounded by the phase deadline (a stopped server must not hang us); output
# (stderr included, for the failure line) in OUT.
rcli () { # host port args...
  local host=$1 port=$2 left
  shift 2
  now_ms
  left=$((DEADLINE - NOW))
  if ((left <= 0)); then OUT='deadline passed'; return 124; fi
  printf -v left '%d.%03d' $((left / 1000)) $((left % 1000))
  OUT=$(timeout "$left" redis-cli -h "$host" -p "$port" -e "$@" 2>&1)
}

# Undo, then one line on stderr and exit 1.
fail () {
  local msg=$1
  if ((FAILED)); then return; fi # a signal during the undo: let the undo finish
  FAILED=1
  trap - EXIT
  if ((REPLICATING)); then
    # The target's data is half-synced or behind: it stays stale; only stop it following.
    if timeout 2 redis-cli -h "$TGT_HOST" -p "$TGT_PORT" -e REPLICAOF NO ONE >/dev/null 2>&1
    then msg+=' (target detached from the source)'
    else msg+=' (and REPLICAOF NO ONE on the target failed: it may still follow the source)'
    fi
  fi
  restore_delay
  fail_line "$msg"
  exit 1
}

restore_delay () {
  if [[ -n $OLD_DELAY ]]; then
    timeout 2 redis-cli -h "$SRC_HOST" -p "$SRC_PORT" \
      CONFIG SET repl-diskless-sync-delay "$OLD_DELAY" >/dev/null 2>&1 || true
    OLD_DELAY=''
  fi
}

# An exit not through fail (set -e): undo all the same.
trap 'rc=$?; ((rc == 0)) || fail "failed (exit ${rc})"' EXIT
trap 'fail "terminated by SIGTERM"' TERM
trap 'fail "interrupted"' INT
trap 'fail "hung up"' HUP
trap '' PIPE # a write to a closed stdout fails (and so fails the run) instead of killing us

info () { # host port sections... -> INFO
  local host=$1 port=$2
  shift 2
  rcli "$host" "$port" INFO "$@" || fail "INFO on $host:$port: $OUT"
  INFO=$OUT
}

field () { # name -> F (the field's value in INFO, '' if absent)
  local re=$'(^|\n)'"$1"$':([^\r\n]*)'
  F=''
  if [[ $INFO =~ $re ]]; then F=${BASH_REMATCH[2]}; fi
}

keys_total () { # -> KEYS, summed over every db in INFO keyspace
  local s=$INFO re='db[0-9]+:keys=([0-9]+)'
  KEYS=0
  while [[ $s =~ $re ]]; do
    KEYS=$((KEYS + BASH_REMATCH[1]))
    s=${s#*"${BASH_REMATCH[0]}"}
  done
}

# What the target must show to be a synced replica of the source (SRC_REPLID set).
target_synced () {
  field role; [[ $F == slave ]] || return 1
  field master_host; [[ $F == "$SRC_HOST" ]] || return 1
  field master_port; [[ $F == "$SRC_PORT" ]] || return 1
  field master_link_status; [[ $F == up ]] || return 1
  field master_sync_in_progress; [[ $F == 0 ]] || return 1
  field master_replid; [[ $F == "$SRC_REPLID" ]] || return 1
}

# Whether the source streams its writes to the target (the sync is over), from the source's
# INFO (in INFO). The target says it is synced as soon as it loaded the snapshot, but after a
# diskless sync the source holds further writes back until the target's next REPLCONF ACK,
# sent once a second: a cut at that moment would wait for it. So: the source lists the
# target as online, and either the target's offset moved since (writes flow) or 1.2 s passed;
# and the target has applied what the source buffered for it during the sync, but READY_LAG.
# Uses and sets base (the target's first synced offset) and online_at of prepare.
source_streams () {
  field master_repl_offset; local s_off=$F
  # The target's line is the one with its port (or the only one: replica-announce-port).
  local s=$INFO re='slave[0-9]+:ip=[^,]*,port=([0-9]+),state=([a-z_]+)' n=0 only='' state=''
  while [[ $s =~ $re ]]; do
    ((++n))
    only=${BASH_REMATCH[2]}
    if [[ ${BASH_REMATCH[1]} == "$TGT_PORT" ]]; then state=$only; fi
    s=${s#*"${BASH_REMATCH[0]}"}
  done
  if [[ -z $state ]] && ((n == 1)); then state=$only; fi
  info "$TGT_HOST" "$TGT_PORT" replication
  target_synced || return 1
  field slave_repl_offset
  if [[ -z $base ]]; then base=$F; fi
  [[ $state == online ]] || return 1
  ((s_off - F <= READY_LAG)) || return 1
  now_ms
  if ((online_at == 0)); then online_at=$NOW; fi
  ((F > base || NOW - online_at >= 1200))
}

# A line on stdin: 0 = `cut`, 1 = none yet (waited up to $1 s; '' = until one comes).
read_cut () {
  local line rc=0
  if [[ -n $1 ]]; then read -r -t "$1" line || rc=$?; else read -r line || rc=$?; fi
  if ((rc > 128)); then return 1; fi
  if ((rc != 0)); then fail 'stdin closed before cut'; fi
  line=${line%$'\r'}
  [[ $line == cut ]] || fail "unexpected input '$line' (expected cut)"
}

prepare () {
  now_ms
  DEADLINE=$((NOW + TIMEOUT_MS))
  info "$SRC_HOST" "$SRC_PORT" server replication
  field run_id; local src_run=$F
  info "$TGT_HOST" "$TGT_PORT" server
  field run_id
  [[ $F != "$src_run" ]] || fail 'source and target are the same server'
  # Redis 7 delays a diskless full sync by repl-diskless-sync-delay (5 s) to batch replicas;
  # there is only this one, so start at once. A runtime setting, restored once synced.
  if rcli "$SRC_HOST" "$SRC_PORT" CONFIG GET repl-diskless-sync-delay \
    && [[ $OUT =~ repl-diskless-sync-delay.([0-9]+) ]] && [[ ${BASH_REMATCH[1]} != 0 ]]; then
    local old=${BASH_REMATCH[1]}
    if rcli "$SRC_HOST" "$SRC_PORT" CONFIG SET repl-diskless-sync-delay 0; then OLD_DELAY=$old; fi
  fi
  REPLICATING=1
  rcli "$TGT_HOST" "$TGT_PORT" REPLICAOF "$SRC_HOST" "$SRC_PORT" || fail "REPLICAOF: $OUT"
  # A full sync replaces whatever the target held (Redis's PSYNC only continues a shared
  # history, by replication id and offset).
  local cut=0 base='' online_at=0
  for (( ; ; )); do
    info "$SRC_HOST" "$SRC_PORT" replication
    field master_replid; SRC_REPLID=$F
    source_streams && break
    now_ms
    ((NOW < DEADLINE)) || fail "the target's sync from the source did not finish in ${TIMEOUT_MS}ms"
    # Waiting on stdin is the poll's pause, and notices a front that gave up at once.
    if ((!cut)) && read_cut "$PREPARE_POLL_S"; then cut=1; fi
  done
  restore_delay
  CUT_EARLY=$cut
}

# The front holds all input and the source is idle. Read the source first: the target's
# state at an equal offset, read after, holds every write the source had acknowledged.
# Only the master's pings and expiries still move the offsets, so it is reached in a round
# or two; no pause between rounds (each costs two redis-cli runs, ~3 ms each).
cut () {
  now_ms
  DEADLINE=$((NOW + TIMEOUT_MS))
  local s_off s_keys t_off mismatches=0
  for (( ; ; )); do
    info "$SRC_HOST" "$SRC_PORT" replication keyspace
    field master_replid; SRC_REPLID=$F
    field master_repl_offset; s_off=$F
    keys_total; s_keys=$KEYS
    info "$TGT_HOST" "$TGT_PORT" replication keyspace
    if target_synced; then
      field slave_repl_offset; t_off=$F
      keys_total
      if [[ $t_off == "$s_off" ]]; then
        if ((KEYS == s_keys)); then break; fi
        # Equal offsets mean equal data: a key count apart is not a race.
        ((++mismatches < 3)) || fail "target has $KEYS keys, source $s_keys, at offset $s_off"
      fi
    fi
    now_ms
    ((NOW < DEADLINE)) || fail "the target did not catch up with the source in ${TIMEOUT_MS}ms"
  done
  rcli "$TGT_HOST" "$TGT_PORT" REPLICAOF NO ONE || fail "REPLICAOF NO ONE: $OUT"
  info "$TGT_HOST" "$TGT_PORT" replication
  field role
  [[ $F == master ]] || fail "the target is still role:$F after REPLICAOF NO ONE"
  REPLICATING=0
}

prepare
printf 'ready\n' || fail 'stdout closed'
if ((!CUT_EARLY)); then read_cut ''; fi
cut
trap - EXIT
exit 0
