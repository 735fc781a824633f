#!/usr/bin/env bash
# bench/flood.sh: memory and disk of Portcullis during and after a sign-in flood.
#
# Usage:
#   bench/flood.sh          100,000 sign-ins, each for a new address from a new client IP (~5 min)
#
# What it does, all on loopback with the release binary:
#   * starts bench/smtp_sink.py (SMTP, no TLS) and Portcullis with the shipped limits
#     (login.max_pending, login.rate_limit.*, limits.db_cache_bytes at their defaults unless
#     overridden below), a short login.ttl (BENCH_FLOOD_TTL, 30s) so expired challenges are swept
#     during the run, trusted_proxies 127.0.0.1/32 and metrics_listen;
#   * floods POST /.auth/api/login with wrk (bench/flood.lua): BENCH_FLOOD_COUNT requests, each
#     for a distinct address (f<N>@example.com, all allowed, so every admitted one is mailed) and
#     from a distinct client address (X-Forwarded-For 10.x.y.z: per-IP limits never trigger, as
#     for a botnet);
#   * samples every BENCH_SAMPLE seconds, from before the flood until BENCH_FLOOD_AFTER seconds
#     after it: the gateway's VmRSS and VmHWM (/proc/PID/status), the size of data_dir (du) and
#     of its sled folder, challenges in the store (portcullis_pending_challenges) and the outbox
#     depth (portcullis_outbox_depth);
#   * prints the answers (200 / 429 / 503), baseline, peak and after-flood figures and checks the
#     targets as PASS/FAIL lines (informational; exit status 0 unless something broke):
#       peak RSS <= 128 MiB, RSS <= 64 MiB 2 minutes after the flood, database <= 100 MB.
#
# Environment (defaults):
#   BENCH_FLOOD_COUNT=100000  requests (distinct addresses and IPs)
#   BENCH_FLOOD_ROUNDS=1      floods one after the other, each followed by BENCH_FLOOD_AFTER
#                             seconds of sampling (does the database reuse its space?)
#   BENCH_FLOOD_TTL=30s       login.ttl (the sweeper runs every 60 s and removes challenges 60 s
#                             after they expire)
#   BENCH_FLOOD_AFTER=180     seconds sampled after the flood (figures at +60, +120 and the end)
#   BENCH_FLOOD_MAX=300s      wrk -d: upper bound of the flood's duration
#   BENCH_THREADS=2 BENCH_CONNS=64   wrk -t / -c
#   BENCH_SAMPLE=0.5          seconds between samples
#   BENCH_MAX_PENDING=""      login.max_pending ("" = the default)
#   BENCH_DB_CACHE=""         limits.db_cache_bytes ("" = the default)
#   BENCH_SINK_QUICKACK=0     1: the SMTP sink ACKs at once (faster mail; see bench/smtp_sink.py)
#   BENCH_SKIP_BUILD=0        1: do not run `cargo build --release`
#   PORTCULLIS_BIN=target/release/portcullis
#   BENCH_TMP=(mktemp -d)     work dir (config, logs, data, samples.tsv); removed at exit unless
#                             BENCH_KEEP=1 or something failed
#
# The samples are kept in $BENCH_TMP/samples.tsv (BENCH_KEEP=1) for plotting. wrk, curl and
# python3 are installed with apt-get when missing. Everything runs as the current user and is
# stopped at exit.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)

COUNT=${BENCH_FLOOD_COUNT:-100000}
ROUNDS=${BENCH_FLOOD_ROUNDS:-1}
TTL=${BENCH_FLOOD_TTL:-30s}
AFTER=${BENCH_FLOOD_AFTER:-180}
MAX=${BENCH_FLOOD_MAX:-300s}
THREADS=${BENCH_THREADS:-2}
CONNS=${BENCH_CONNS:-64}
SAMPLE=${BENCH_SAMPLE:-0.5}
MAX_PENDING=${BENCH_MAX_PENDING:-}
DB_CACHE=${BENCH_DB_CACHE:-}
SINK_QUICKACK=${BENCH_SINK_QUICKACK:-0}
SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
KEEP=${BENCH_KEEP:-0}
BIN=${PORTCULLIS_BIN:-$ROOT/target/release/portcullis}

PIDS=()
NAMES=()
TMP=""

log() { printf '[flood %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

cleanup() {
    local rc=$?
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[$i]}" "${NAMES[$i]}"
    done
    if [ -n "$TMP" ] && [ -d "$TMP" ]; then
        if [ "$rc" -ne 0 ] || [ "$KEEP" = 1 ]; then
            log "work dir kept: $TMP (logs: $TMP/*.log, samples: $TMP/samples.tsv)"
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# stop_pid PID NAME: SIGTERM, wait up to 15 s, then SIGKILL. Only ever our own children.
stop_pid() {
    local pid=$1 name=$2 i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) ignored SIGTERM; killing"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# start_bg NAME CMD...: runs CMD in the background, output in $TMP/NAME.log; sets LAST_PID.
start_bg() {
    local name=$1
    shift
    "$@" >"$TMP/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    NAMES+=("$name")
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

ensure_tools() {
    local missing=() tool
    for tool in wrk curl python3; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing missing tools with apt-get: ${missing[*]}"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    if ! "${sudo[@]}" apt-get install -y "${missing[@]}"; then
        "${sudo[@]}" apt-get update
        "${sudo[@]}" apt-get install -y "${missing[@]}"
    fi
}

build() {
    if [ "$SKIP_BUILD" = 1 ]; then
        log "BENCH_SKIP_BUILD=1: using $BIN as is"
    else
        log "cargo build --release (may wait for the cargo lock)"
        (cd "$ROOT" && cargo build --release --quiet)
    fi
    [ -x "$BIN" ] || die "no portcullis binary at $BIN"
}

gateway_metrics() { curl -s --max-time 3 "http://127.0.0.1:$METRICS_PORT/metrics" || true; }
metric() { awk -v n="portcullis_$1" '$1 == n { print $2 }' <<<"$2"; }
# status_kib PID FIELD: VmRSS / VmHWM in KiB.
status_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
du_kib() { du -sk "$1" 2>/dev/null | cut -f1 || echo 0; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# sampler PID DATA OUT T0: one line every $SAMPLE s until killed:
# t_s rss_kib hwm_kib data_kib db_kib pending outbox
sampler() {
    local pid=$1 data=$2 out=$3 t0=$4 m now
    while kill -0 "$pid" 2>/dev/null; do
        m=$(gateway_metrics)
        now=$(date +%s.%N)
        printf '%.1f\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(awk -v a="$now" -v b="$t0" 'BEGIN { print a - b }')" \
            "$(status_kib "$pid" VmRSS)" "$(status_kib "$pid" VmHWM)" "$(du_kib "$data")" \
            "$(du_kib "$data/db")" "$(metric pending_challenges "$m")" "$(metric outbox_depth "$m")" >>"$out"
        sleep "$SAMPLE"
    done
}

# window LABEL FROM TO: the last sample of [FROM, TO] (seconds since start), and the maxima over
# the window.
window() {
    awk -F'\t' -v a="$2" -v b="$3" -v label="$1" '
        $1 >= a && $1 <= b {
            n++; last = $0
            if ($2 > rss) rss = $2; if ($4 > data) data = $4; if ($5 > db) db = $5
            if ($6 > pend) pend = $6; if ($7 > ob) ob = $7
        }
        END {
            if (n == 0) { printf "%-28s (no samples)\n", label; exit }
            split(last, l, "\t")
            printf "%-28s RSS %7.1f MiB (max %7.1f)   data_dir %7.1f MiB (max %7.1f, sled %7.1f)   challenges %6d (max %6d)   outbox %6d (max %6d)\n",
                label, l[2] / 1024, rss / 1024, l[4] / 1024, data / 1024, db / 1024, l[6], pend, l[7], ob
        }' "$TMP/samples.tsv"
}

# max_col FROM TO COL: the maximum of column COL over [FROM, TO]; value_at T COL: the last sample
# at or before T.
max_col() { awk -F'\t' -v a="$1" -v b="$2" -v c="$3" '$1 >= a && $1 <= b && $c > m { m = $c } END { print m + 0 }' "$TMP/samples.tsv"; }
value_at() { awk -F'\t' -v t="$1" -v c="$2" '$1 <= t { v = $c } END { print v + 0 }' "$TMP/samples.tsv"; }

verdict() { # verdict LABEL OK(1/0) DETAIL
    printf '%-44s %s   %s\n' "$1" "$([ "$2" = 1 ] && echo PASS || echo FAIL)" "$3"
}

main() {
    ensure_tools
    build
    TMP=${BENCH_TMP:-$(mktemp -d /tmp/portcullis-flood.XXXXXX)}
    mkdir -p "$TMP"
    log "work dir $TMP"

    local sink_port pc_port i
    sink_port=$(free_port)
    pc_port=$(free_port)
    METRICS_PORT=$(free_port)
    local sink_args=()
    [ "$SINK_QUICKACK" = 1 ] && sink_args=(--quickack)
    start_bg smtp-sink python3 "$BENCH_DIR/smtp_sink.py" --port "$sink_port" --count-file "$TMP/sink.count" "${sink_args[@]}"
    local sink_pid=$LAST_PID
    for ((i = 0; i < 100; i++)); do
        grep -q listening "$TMP/smtp-sink.log" 2>/dev/null && break
        kill -0 "$sink_pid" 2>/dev/null || die "smtp sink died: $(cat "$TMP/smtp-sink.log")"
        sleep 0.1
    done

    local data="$TMP/pc-data"
    mkdir -p "$data"
    {
        cat <<EOF
# Generated by bench/flood.sh
listen: "127.0.0.1:$pc_port"
public_url: "http://127.0.0.1:$pc_port"
data_dir: "$data"
upstream: "builtin:whoami"
trusted_proxies: ["127.0.0.1/32"]
metrics_listen: "127.0.0.1:$METRICS_PORT"
access:
  allowed_domains: ["example.com"]
login:
  ttl: "$TTL"
EOF
        [ -n "$MAX_PENDING" ] && echo "  max_pending: $MAX_PENDING"
        [ -n "$DB_CACHE" ] && printf 'limits:\n  db_cache_bytes: %s\n' "$DB_CACHE"
        cat <<EOF
email:
  from: "Portcullis flood <auth@example.com>"
  transport: smtp
  smtp:
    host: 127.0.0.1
    port: $sink_port
    security: none
    timeout: 10s
log_format: text
EOF
    } >"$TMP/portcullis.yaml"
    "$BIN" check --config "$TMP/portcullis.yaml" >/dev/null || die "portcullis rejects $TMP/portcullis.yaml"

    start_bg portcullis env PORTCULLIS_LOG=warn "$BIN" serve --config "$TMP/portcullis.yaml"
    local pc_pid=$LAST_PID
    for ((i = 0; i < 200; i++)); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$pc_port/.auth/healthz" && break
        kill -0 "$pc_pid" 2>/dev/null || die "portcullis exited: $(tail -n 20 "$TMP/portcullis.log")"
        sleep 0.1
    done
    [ -n "$(metric outbox_depth "$(gateway_metrics)")" ] || die "no metrics on 127.0.0.1:$METRICS_PORT"

    local t0
    t0=$(date +%s.%N)
    : >"$TMP/samples.tsv"
    sampler "$pc_pid" "$data" "$TMP/samples.tsv" "$t0" &
    local sampler_pid=$!
    PIDS+=("$sampler_pid")
    NAMES+=("sampler")
    sleep 3
    local r starts=() ends=() hwms=()
    now() { awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { print a - b }'; }
    for ((r = 1; r <= ROUNDS; r++)); do
        starts+=("$(now)")
        log "flood $r/$ROUNDS: $COUNT sign-ins, wrk -t$THREADS -c$CONNS (at most $MAX), login.ttl $TTL"
        # wrk runs until -d even when every thread stopped: SIGINT it once all are done (it
        # then reports the real duration).
        rm -rf "$TMP/done" && mkdir -p "$TMP/done"
        FLOOD_PREFIX="f${r}_" FLOOD_COUNT=$COUNT FLOOD_THREADS=$THREADS FLOOD_DONE_DIR="$TMP/done" \
            wrk -t"$THREADS" -c"$CONNS" -d"$MAX" --latency -s "$BENCH_DIR/flood.lua" \
            "http://127.0.0.1:$pc_port/" >"$TMP/wrk-$r.log" 2>&1 &
        local wrk_pid=$! end=""
        PIDS+=("$wrk_pid")
        NAMES+=("wrk")
        while kill -0 "$wrk_pid" 2>/dev/null; do
            if [ "$(find "$TMP/done" -type f | wc -l)" -ge "$THREADS" ]; then
                end=$(now)
                kill -INT "$wrk_pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
        wait "$wrk_pid" || die "wrk failed: $(cat "$TMP/wrk-$r.log")"
        [ -n "$end" ] || end=$(now)
        ends+=("$end")
        hwms+=("$(status_kib "$pc_pid" VmHWM)")
        log "flood $r done after $(awk -v a="$end" -v b="${starts[$((r - 1))]}" 'BEGIN { printf "%.1f", a - b }') s; sampling for $AFTER s more"
        sleep "$AFTER"
        kill -0 "$pc_pid" 2>/dev/null || die "portcullis died: $(tail -n 20 "$TMP/portcullis.log")"
    done
    kill "$sampler_pid" 2>/dev/null || true
    wait "$sampler_pid" 2>/dev/null || true

    local cpu mem
    cpu=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
    mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
    echo "== flood: $ROUNDS x $COUNT sign-ins for distinct addresses from distinct IPs, login.ttl $TTL, nproc $(nproc), ${cpu:-?}, $mem =="
    echo "config:      $(grep -E 'max_pending|db_cache_bytes' "$TMP/portcullis.yaml" | tr -s ' ' | tr '\n' ' ' || true)(others: defaults)"
    window "before (idle)" 0 "${starts[0]}"
    local line s e
    for ((r = 1; r <= ROUNDS; r++)); do
        s=${starts[$((r - 1))]}
        e=${ends[$((r - 1))]}
        line=$(grep '^BENCH ' "$TMP/wrk-$r.log" || die "no summary from wrk: $(cat "$TMP/wrk-$r.log")")
        get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
        echo "-- flood $r --"
        printf '%-28s %s requests in %.1f s (%.0f/s), p50 %.1f ms, p99 %.1f ms\n' "answers" \
            "$(get requests)" "$(awk -v d="$(get duration_us)" 'BEGIN { print d / 1e6 }')" "$(get rps)" \
            "$(awk -v v="$(get p50_us)" 'BEGIN { print v / 1000 }')" "$(awk -v v="$(get p99_us)" 'BEGIN { print v / 1000 }')"
        printf '%-28s 200: %s   429: %s   503: %s   other: %s   socket errors: %s/%s/%s/%s\n' "" \
            "$(get accepted)" "$(get limited)" "$(get busy)" "$(get other)" \
            "$(get err_connect)" "$(get err_read)" "$(get err_write)" "$(get err_timeout)"
        window "during the flood" "$s" "$e"
        window "flood end .. +60 s" "$e" "$(awk -v a="$e" 'BEGIN { print a + 60 }')"
        window "+60 .. +120 s" "$(awk -v a="$e" 'BEGIN { print a + 60 }')" "$(awk -v a="$e" 'BEGIN { print a + 120 }')"
        window "+120 s .. +$AFTER s" "$(awk -v a="$e" 'BEGIN { print a + 120 }')" "$(awk -v a="$e" -v b="$AFTER" 'BEGIN { print a + b }')"
        printf '%-28s %s MiB\n' "VmHWM at the end of it" "$(mib "${hwms[$((r - 1))]}")"
    done
    echo "--"
    printf '%-28s %s\n' "mails received by the sink" "$(cat "$TMP/sink.count" 2>/dev/null || echo 0)"
    printf '%-28s %s MiB\n' "peak RSS (VmHWM)" "$(mib "$(value_at 1e9 3)")"

    local peak_rss after_rss=0 peak_db v
    peak_rss=$(max_col 0 1e9 3)
    for e in "${ends[@]}"; do
        v=$(value_at "$(awk -v a="$e" 'BEGIN { print a + 120 }')" 2)
        [ "$v" -gt "$after_rss" ] && after_rss=$v
    done
    peak_db=$(max_col 0 1e9 5)
    echo
    verdict "peak RSS <= 128 MiB" "$(awk -v v="$peak_rss" 'BEGIN { print (v <= 128 * 1024) }')" "$(mib "$peak_rss") MiB"
    verdict "RSS 2 min after each flood <= 64 MiB" "$(awk -v v="$after_rss" 'BEGIN { print (v <= 64 * 1024) }')" "$(mib "$after_rss") MiB (the highest)"
    verdict "database (sled folder) <= 100 MB at any time" "$(awk -v v="$peak_db" 'BEGIN { print (v * 1024 <= 100e6) }')" "$(awk -v v="$peak_db" 'BEGIN { printf "%.1f MB", v * 1024 / 1e6 }')"
}

main "$@"
