#!/usr/bin/env bash
# Local infrastructure for churnsignal, without Docker:
#   - Apache Kafka, single node in KRaft mode (combined broker + controller),
#     PLAINTEXT on 127.0.0.1:9092, controller on 127.0.0.1:9093;
#   - a private PostgreSQL cluster on 127.0.0.1:55432.
# Data and logs live under var/ in the repository (gitignored). Kafka's jars come
# from Maven Central once and are cached in $CHURNSIGNAL_CACHE
# (default ~/.cache/churnsignal).
#
# Usage: scripts/services.sh [COMMAND]
#   start (default)   start whatever is not running yet, write var/services.env
#   stop              stop Kafka and PostgreSQL
#   status            show what runs (exit 0 only when both answer)
#   env               print the export lines of var/services.env
#   kafka-start       start the broker alone (fast once the jars are cached)
#   kafka-stop        stop the broker alone
#   pg-start          start PostgreSQL alone
#   pg-stop           stop PostgreSQL alone
#   wipe              stop both and delete their data; only for a second instance
#                     (SERVICES_VAR_DIR set), never the default one under var/
#
# Environment:
#   CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS and CHURNSIGNAL_DATABASE_URL: when both are
#     set and reachable, nothing is started and these values are written instead.
#   CHURNSIGNAL_CACHE           jar cache (default ~/.cache/churnsignal)
#   CHURNSIGNAL_KAFKA_VERSION   Kafka version from Maven Central (default 4.1.1)
#   CHURNSIGNAL_KAFKA_HEAP      JVM heap options (default "-Xms256m -Xmx1g")
#   CHURNSIGNAL_START_TIMEOUT   seconds to wait for each server (default 120)
#
# A second, private instance (e.g. `make chaos`, which stops and restarts its
# servers) runs beside the default one with its own directory and ports:
#   SERVICES_VAR_DIR                directory for data, logs, pid files and its
#                                   services.env (default var/)
#   SERVICES_KAFKA_PORT             Kafka PLAINTEXT listener (default 9092)
#   SERVICES_KAFKA_CONTROLLER_PORT  Kafka KRaft controller (default 9093)
#   SERVICES_PG_PORT                PostgreSQL (default 55432)
# e.g. SERVICES_VAR_DIR=var/chaos SERVICES_KAFKA_PORT=19092 \
#      SERVICES_KAFKA_CONTROLLER_PORT=19093 SERVICES_PG_PORT=15432 scripts/services.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEFAULT_VAR="$ROOT/var"
VAR="${SERVICES_VAR_DIR:-$DEFAULT_VAR}"
[[ "$VAR" == /* ]] || VAR="$ROOT/$VAR"
VAR="${VAR%/}"
ENV_FILE="$VAR/services.env"
START_TIMEOUT="${CHURNSIGNAL_START_TIMEOUT:-120}"

KAFKA_VERSION="${CHURNSIGNAL_KAFKA_VERSION:-4.1.1}"
# Kafka's own distribution logs through slf4j 1.7 -> log4j2; match its log4j-core.
LOG4J_VERSION="2.24.3"
CACHE="${CHURNSIGNAL_CACHE:-${HOME:-/root}/.cache/churnsignal}"
KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_HOME/libs"
KAFKA_HOST="127.0.0.1"
KAFKA_PORT="${SERVICES_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${SERVICES_KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_DIR="$VAR/kafka"
KAFKA_CONF="$KAFKA_DIR/config"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_LOGS="$KAFKA_DIR/logs"
KAFKA_PID_FILE="$KAFKA_DIR/kafka.pid"
KAFKA_HEAP="${CHURNSIGNAL_KAFKA_HEAP:--Xms256m -Xmx1g}"

PG_HOST="127.0.0.1"
PG_PORT="${SERVICES_PG_PORT:-55432}"
PG_DB="churnsignal"
PG_TEST_DB="churnsignal_test"
PG_USER="churnsignal"
PG_PASSWORD="churnsignal"

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

for port_var in KAFKA_PORT KAFKA_CONTROLLER_PORT PG_PORT; do
    [[ "${!port_var}" =~ ^[0-9]+$ ]] && ((${!port_var} > 0 && ${!port_var} < 65536)) \
        || die "SERVICES_$port_var must be a TCP port (1-65535), got '${!port_var}'"
done

# True when something accepts TCP connections on HOST PORT.
port_open() {
    # shellcheck disable=SC2016  # $0/$1 expand in the inner shell
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# Print the last lines of a log file, indented, to stderr.
show_log_tail() {
    [[ -f "$1" ]] || return 0
    log "last lines of $1:"
    tail -n "${2:-30}" "$1" | sed 's/^/    /' >&2
}

lock() {
    mkdir -p "$VAR"
    exec 9>"$VAR/.services.lock"
    flock 9
}

# --------------------------------------------------------------------------- Kafka

kafka_pid() {
    local pid
    [[ -f "$KAFKA_PID_FILE" ]] || return 1
    pid="$(cat "$KAFKA_PID_FILE")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null \
        && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' \
        && echo "$pid"
}

# A Python that runs (a version manager's shim may not, depending on the
# directory); empty when there is none, and readiness falls back to the port.
probe_python() {
    local py
    for py in /usr/bin/python3 python3; do
        if command -v "$py" >/dev/null && "$py" -c '' 2>/dev/null; then
            command -v "$py"
            return 0
        fi
    done
    return 1
}
PROBE_PYTHON="$(probe_python || true)"

# Kafka answers a Metadata request listing at least one live broker.
kafka_probe() {
    if [[ -n "$PROBE_PYTHON" ]]; then
        "$PROBE_PYTHON" "$ROOT/scripts/kafka_probe.py" "$KAFKA_HOST:$KAFKA_PORT" --timeout 3
    else
        port_open "$KAFKA_HOST" "$KAFKA_PORT" && echo "port open"
    fi
}

kafka_ready() {
    kafka_probe >/dev/null 2>&1
}

kafka_fetch_jars() {
    [[ -f "$KAFKA_LIBS/.complete" ]] && return 0
    command -v java >/dev/null || die "java not found (Kafka needs Java 17+)"
    command -v mvn >/dev/null || die "mvn not found (needed once to fetch Kafka's jars)"
    local work="$KAFKA_HOME/fetch"
    rm -rf "$work" "$KAFKA_LIBS"
    mkdir -p "$work"
    cat >"$work/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>churnsignal.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>3.8.1</version>
      </plugin>
    </plugins>
  </build>
</project>
EOF
    log "Downloading Apache Kafka $KAFKA_VERSION and its runtime dependencies from Maven Central"
    log "(first run only: about 60 MB with Maven's own plugins; cached in $KAFKA_HOME) ..."
    local started=$SECONDS
    if ! mvn -B -ntp -f "$work/pom.xml" -Dmaven.repo.local="$work/m2" \
            dependency:copy-dependencies -DincludeScope=runtime \
            -DoutputDirectory="$KAFKA_LIBS.tmp" >"$work/mvn.log" 2>&1; then
        show_log_tail "$work/mvn.log" 40
        die "could not fetch Kafka $KAFKA_VERSION with Maven (full log: $work/mvn.log)"
    fi
    mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
    touch "$KAFKA_LIBS/.complete"
    rm -rf "$work"
    log "Fetched $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars ($(du -sh "$KAFKA_LIBS" | cut -f1)) in $((SECONDS - started))s"
}

kafka_write_config() {
    mkdir -p "$KAFKA_CONF" "$KAFKA_DATA" "$KAFKA_LOGS"
    cat >"$KAFKA_CONF/server.properties" <<EOF
# Generated by scripts/services.sh; edits are overwritten at each start.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DATA

auto.create.topics.enable=true
num.partitions=6
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

num.network.threads=3
num.io.threads=4
log.retention.hours=24
log.segment.bytes=268435456
EOF
    cat >"$KAFKA_CONF/log4j2.properties" <<'EOF'
# Generated by scripts/services.sh; edits are overwritten at each start.
status = warn
name = churnsignal-kafka

appender.server.type = RollingFile
appender.server.name = SERVER
appender.server.fileName = ${sys:kafka.logs.dir}/server.log
appender.server.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.server.layout.type = PatternLayout
appender.server.layout.pattern = [%d] %p %m (%c)%n
appender.server.policies.type = Policies
appender.server.policies.size.type = SizeBasedTriggeringPolicy
appender.server.policies.size.size = 50MB
appender.server.strategy.type = DefaultRolloverStrategy
appender.server.strategy.max = 3

rootLogger.level = INFO
rootLogger.appenderRef.server.ref = SERVER

logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
EOF
}

kafka_format() {
    [[ -f "$KAFKA_DATA/meta.properties" ]] && return 0
    local cluster_id
    # A Kafka cluster id is 16 random bytes in unpadded URL-safe base64. It may begin with "-": passed as
    # --cluster-id=<id>, so that the tool's argument parser does not read it as an option.
    cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    log "Formatting Kafka storage in $KAFKA_DATA (cluster id $cluster_id)"
    if ! java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$KAFKA_CONF/log4j2.properties" \
            -Dkafka.logs.dir="$KAFKA_LOGS" kafka.tools.StorageTool format \
            --cluster-id="$cluster_id" --config "$KAFKA_CONF/server.properties" --standalone \
            >"$KAFKA_LOGS/format.log" 2>&1; then
        show_log_tail "$KAFKA_LOGS/format.log"
        die "kafka storage format failed (log: $KAFKA_LOGS/format.log)"
    fi
}

kafka_wait_ready() {
    local pid="$1" deadline=$((SECONDS + START_TIMEOUT))
    until kafka_ready; do
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            show_log_tail "$KAFKA_LOGS/stdout.log" 15
            show_log_tail "$KAFKA_LOGS/server.log" 30
            die "Kafka exited during startup; see $KAFKA_LOGS/server.log"
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail "$KAFKA_LOGS/server.log" 30
            die "Kafka did not answer on $KAFKA_HOST:$KAFKA_PORT within ${START_TIMEOUT}s; see $KAFKA_LOGS/server.log"
        fi
        sleep 0.5
    done
}

kafka_start() {
    local pid started=$SECONDS
    if pid="$(kafka_pid)"; then
        log "Kafka already running (pid $pid); waiting until it answers"
        kafka_wait_ready "$pid"
        log "Kafka ready on $KAFKA_HOST:$KAFKA_PORT (pid $pid)"
        return 0
    fi
    if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
        log "Something already listens on $KAFKA_HOST:$KAFKA_PORT; reusing it as the Kafka broker"
        kafka_wait_ready ""
        return 0
    fi
    command -v java >/dev/null || die "java not found (Kafka needs Java 17+)"
    kafka_fetch_jars
    kafka_write_config
    kafka_format
    log "Starting Kafka $KAFKA_VERSION (log: $KAFKA_LOGS/server.log)"
    # setsid: the broker outlives this script and ignores Ctrl-C sent to make/pytest.
    # 9>&-: the broker must not inherit the lock held by this script.
    # shellcheck disable=SC2086
    nohup setsid java $KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$KAFKA_CONF/log4j2.properties" \
        -Dkafka.logs.dir="$KAFKA_LOGS" \
        -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_CONF/server.properties" \
        >>"$KAFKA_LOGS/stdout.log" 2>&1 </dev/null 9>&- &
    pid=$!
    echo "$pid" >"$KAFKA_PID_FILE"
    kafka_wait_ready "$pid"
    log "Kafka ready on $KAFKA_HOST:$KAFKA_PORT (pid $pid, $((SECONDS - started))s)"
}

kafka_stop() {
    local pid
    if ! pid="$(kafka_pid)"; then
        rm -f "$KAFKA_PID_FILE"
        if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
            log "Kafka on $KAFKA_HOST:$KAFKA_PORT was not started by this script; leaving it alone"
        else
            log "Kafka is not running"
        fi
        return 0
    fi
    log "Stopping Kafka (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "Kafka did not stop within 30s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    rm -f "$KAFKA_PID_FILE"
    log "Kafka stopped"
}

kafka_status() {
    local pid info
    if info="$(kafka_probe 2>/dev/null)"; then
        pid="$(kafka_pid || echo "not started by this script")"
        echo "kafka:      up   $KAFKA_HOST:$KAFKA_PORT ($info; pid $pid; log $KAFKA_LOGS/server.log)"
        return 0
    fi
    echo "kafka:      down"
    return 1
}

# ---------------------------------------------------------------------- PostgreSQL

PG_BIN=""

pg_find_bin() {
    local dir
    dir="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
        PG_BIN="$dir"
        return 0
    fi
    return 1
}

pg_install() {
    pg_find_bin && return 0
    [[ $EUID -eq 0 ]] || die "PostgreSQL server binaries are missing; run: sudo apt-get install -y postgresql"
    log "Installing PostgreSQL from Debian packages (apt-get install postgresql) ..."
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    pg_find_bin || die "PostgreSQL installed but initdb/pg_ctl not found under /usr/lib/postgresql/*/bin"
}

# Run a command as the PostgreSQL owner: the postgres OS user when we are root
# (the server refuses to run as root), ourselves otherwise.
as_pg() {
    if [[ $EUID -eq 0 ]]; then
        # From /: the postgres user may not be allowed into the current directory.
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# The cluster lives in var/pg, unless the postgres OS user cannot reach the
# repository (e.g. a checkout under /root); then in /var/tmp, keyed by the path.
pg_dir() {
    if [[ $EUID -ne 0 ]] || runuser -u postgres -- test -x "$VAR" 2>/dev/null; then
        echo "$VAR/pg"
    else
        local key="$ROOT"
        [[ "$VAR" == "$DEFAULT_VAR" ]] || key="$VAR"
        echo "/var/tmp/churnsignal-pg-$(printf '%s' "$key" | cksum | cut -d' ' -f1)"
    fi
}

pg_ready() {
    if [[ -n "$PG_BIN" ]]; then
        "$PG_BIN/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" -t 3
    else
        port_open "$PG_HOST" "$PG_PORT"
    fi
}

pg_psql() {
    "${PG_BIN:-/usr/bin}/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U postgres "$@"
}

pg_write_config() {
    local data="$1"
    cat >"$data/churnsignal.conf" <<EOF
# Generated by scripts/services.sh; edits are overwritten at each start.
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = ''
max_connections = 200
shared_buffers = 256MB
# Durability stays on: benchmarks measure real commits.
fsync = on
synchronous_commit = on
full_page_writes = on
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
EOF
    cat >"$data/pg_hba.conf" <<'EOF'
# Generated by scripts/services.sh: loopback only, trust.
local   all   all                  trust
host    all   all   127.0.0.1/32   trust
host    all   all   ::1/128        trust
EOF
    chown postgres:postgres "$data/churnsignal.conf" "$data/pg_hba.conf" 2>/dev/null || true
}

pg_init() {
    local dir="$1" data="$1/data"
    [[ -f "$data/PG_VERSION" ]] && return 0
    log "Creating a PostgreSQL cluster in $data"
    mkdir -p "$dir"
    if [[ $EUID -eq 0 ]]; then
        chown postgres:postgres "$dir"
    fi
    chmod 700 "$dir"
    if ! as_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
            >"$dir/initdb.log" 2>&1; then
        show_log_tail "$dir/initdb.log"
        die "initdb failed (log: $dir/initdb.log)"
    fi
    echo "include = 'churnsignal.conf'" >>"$data/postgresql.conf"
}

pg_ensure_databases() {
    pg_psql -d postgres <<EOF || die "could not create role $PG_USER and its databases on $PG_HOST:$PG_PORT (as user postgres)"
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', '$PG_USER', '$PG_PASSWORD')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER')
\gexec
SELECT format('CREATE DATABASE %I OWNER %I', d, '$PG_USER')
FROM unnest(ARRAY['$PG_DB', '$PG_TEST_DB']) AS d
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = d)
\gexec
EOF
}

pg_start() {
    local started=$SECONDS dir
    dir="$(pg_dir)"
    if pg_ready; then
        log "PostgreSQL already answers on $PG_HOST:$PG_PORT; reusing it"
        pg_ensure_databases
        return 0
    fi
    pg_install
    pg_init "$dir"
    pg_write_config "$dir/data"
    log "Starting PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') (log: $dir/postgres.log)"
    touch "$dir/postgres.log"
    if [[ $EUID -eq 0 ]]; then
        chown postgres:postgres "$dir/postgres.log"
    fi
    # 9>&-: the server must not inherit the lock held by this script.
    if ! as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t "$START_TIMEOUT" \
            start >/dev/null 9>&-; then
        show_log_tail "$dir/postgres.log"
        die "PostgreSQL did not start; see $dir/postgres.log"
    fi
    pg_ensure_databases
    log "PostgreSQL ready on $PG_HOST:$PG_PORT ($((SECONDS - started))s)"
}

pg_stop() {
    local dir
    dir="$(pg_dir)"
    if [[ -f "$dir/data/postmaster.pid" && -n "$PG_BIN" ]]; then
        log "Stopping PostgreSQL"
        as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
        log "PostgreSQL stopped"
    elif pg_ready; then
        log "PostgreSQL on $PG_HOST:$PG_PORT was not started by this script; leaving it alone"
    else
        log "PostgreSQL is not running"
    fi
}

pg_status() {
    if pg_ready; then
        echo "postgresql: up   $PG_HOST:$PG_PORT (data $(pg_dir)/data; log $(pg_dir)/postgres.log)"
        return 0
    fi
    echo "postgresql: down"
    return 1
}

# ---------------------------------------------------------------------- env file

# host:port of the first server in a bootstrap list or a database URL.
url_hostport() {
    local s="$1"
    s="${s#*://}"
    s="${s##*@}"
    s="${s%%/*}"
    s="${s%%,*}"
    echo "$s"
}

reachable() {
    local hostport
    hostport="$(url_hostport "$1")"
    [[ "$hostport" == *:* ]] || return 1
    port_open "${hostport%:*}" "${hostport##*:}"
}

write_env() {
    local kafka="$1" db="$2" test_db="$3"
    mkdir -p "$VAR"
    cat >"$ENV_FILE.tmp" <<EOF
export CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS=$kafka
export CHURNSIGNAL_DATABASE_URL=$db
export CHURNSIGNAL_TEST_DATABASE_URL=$test_db
EOF
    mv "$ENV_FILE.tmp" "$ENV_FILE"
    echo
    echo "Services are up. Use them with:"
    echo "  source ${ENV_FILE#"$ROOT"/}"
    sed 's/^/  /' "$ENV_FILE"
}

local_db_url() {
    echo "postgresql+asyncpg://$PG_USER:$PG_PASSWORD@$PG_HOST:$PG_PORT/$1"
}

cmd_start() {
    local kafka="${CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS:-}" db="${CHURNSIGNAL_DATABASE_URL:-}"
    if [[ -n "$kafka" && -n "$db" ]]; then
        if reachable "$kafka" && reachable "$db"; then
            log "Using the servers from the environment; starting nothing"
            write_env "$kafka" "$db" "${CHURNSIGNAL_TEST_DATABASE_URL:-${db%/*}/$PG_TEST_DB}"
            return 0
        fi
        log "CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS/CHURNSIGNAL_DATABASE_URL are set but not reachable; starting local servers"
    fi
    lock
    pg_start
    kafka_start
    write_env "$KAFKA_HOST:$KAFKA_PORT" "$(local_db_url "$PG_DB")" "$(local_db_url "$PG_TEST_DB")"
}

# Stop a second instance and delete its data (its logs stay); refused for the default one.
cmd_wipe() {
    [[ "$VAR" != "$DEFAULT_VAR" ]] || die "wipe deletes data: only for a second instance (SERVICES_VAR_DIR), not $DEFAULT_VAR"
    lock
    kafka_stop
    pg_stop
    local dir
    dir="$(pg_dir)"
    rm -rf "$KAFKA_DATA" "$dir/data" "$ENV_FILE"
    log "Deleted the data of the instance in $VAR"
}

cmd_status() {
    local rc=0
    pg_status || rc=3
    kafka_status || rc=3
    return "$rc"
}

main() {
    local cmd="${1:-start}"
    case "$cmd" in
        start) cmd_start ;;
        stop) lock; kafka_stop; pg_stop ;;
        status) cmd_status ;;
        env) [[ -f "$ENV_FILE" ]] || die "no $ENV_FILE yet; run scripts/services.sh first"; cat "$ENV_FILE" ;;
        kafka-start) lock; kafka_start ;;
        kafka-stop) lock; kafka_stop ;;
        pg-start) lock; pg_start ;;
        pg-stop) lock; pg_stop ;;
        wipe) cmd_wipe ;;
        -h | --help | help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' ;;
        *) die "unknown command '$cmd' (try: start, stop, status, env, kafka-start, kafka-stop, pg-start, pg-stop, wipe)" ;;
    esac
}

mkdir -p "$VAR"
pg_find_bin || true
main "$@"
