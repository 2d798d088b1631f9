# Shared by scripts/test and scripts/run: make Redis (and, best effort, Postgres) available on a
# fresh Debian machine. Source it after defining say/warn/die/as_root.

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these by hand: $*"
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

# True if something accepts TCP connections on host $1 port $2.
tcp_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" >/dev/null 2>&1
}

# ---------------------------------------------------------------------------------------------
# Redis
REDIS_URL_EFFECTIVE="${REDIS_URL_EFFECTIVE:-${TEST_REDIS_URL:-${REDIS_URL:-redis://127.0.0.1:6379}}}"

# host and port of a redis:// or rediss:// URL (userinfo and db stripped).
redis_host_port() {
    local rest="${REDIS_URL_EFFECTIVE#*://}"
    rest="${rest%%/*}"
    rest="${rest%%\?*}"
    rest="${rest##*@}"
    local host="${rest%%:*}" port=6379
    if [ "$rest" != "$host" ]; then port="${rest##*:}"; fi
    printf '%s %s\n' "${host:-127.0.0.1}" "$port"
}
read -r REDIS_HOST REDIS_PORT < <(redis_host_port)

# True if the Redis at REDIS_URL_EFFECTIVE answers PING with anything (PONG, or an auth error).
redis_answers() {
    if command -v redis-cli >/dev/null 2>&1; then
        timeout 5 redis-cli -u "$REDIS_URL_EFFECTIVE" ping >/dev/null 2>&1
    else
        timeout 3 bash -c '
            exec 3<>"/dev/tcp/$0/$1" || exit 1
            printf "PING\r\n" >&3
            IFS= read -r -t 2 line <&3 && [ -n "$line" ]
        ' "$REDIS_HOST" "$REDIS_PORT" >/dev/null 2>&1
    fi
}

ensure_redis() {
if ! command -v redis-server >/dev/null 2>&1; then
    say "redis-server not found; installing it"
    apt_install redis-server
fi

if redis_answers; then
    say "Redis answers at $REDIS_URL_EFFECTIVE"
else
    case "$REDIS_HOST" in
        127.0.0.1 | localhost) ;;
        *) die "nothing answers at $REDIS_URL_EFFECTIVE and it is not local, so I will not start one" ;;
    esac
    say "nothing answers at $REDIS_URL_EFFECTIVE; starting a local redis-server on port $REDIS_PORT"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
        --logfile "${TMPDIR:-/tmp}/scripts-test-redis-$REDIS_PORT.log"
    for _ in $(seq 100); do
        redis_answers && break
        sleep 0.1
    done
    redis_answers || die "the local redis-server did not come up; see ${TMPDIR:-/tmp}/scripts-test-redis-$REDIS_PORT.log"
    say "Redis is up at $REDIS_URL_EFFECTIVE"
fi
}

# ---------------------------------------------------------------------------------------------
# Postgres
ensure_postgres() {
    if [ -n "${DATABASE_URL:-}" ]; then
        say "DATABASE_URL is set; not touching the local Postgres"
        return 0
    fi
    if tcp_open 127.0.0.1 5432; then
        say "Postgres listens on 127.0.0.1:5432"
        return 0
    fi
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
        say "Postgres is not installed; installing postgresql"
        apt_install postgresql || return 1
    fi
    local version
    version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$version" ] || return 1
    if [ ! -d "/etc/postgresql/$version/main" ]; then
        warn "no Postgres cluster $version/main; create one with: pg_createcluster $version main"
        return 1
    fi
    say "starting Postgres cluster $version/main"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || return 1
    for _ in $(seq 50); do
        tcp_open 127.0.0.1 5432 && return 0
        sleep 0.2
    done
    return 1
}


# The local development role and database (`app`/`app`, CREATEDB for per-test databases), made
# once on a local cluster when DATABASE_URL is unset. Exports DATABASE_URL for what runs next.
DEFAULT_DATABASE_URL="postgres://app:app@127.0.0.1:5432/app"
ensure_app_database() {
    if [ -n "${DATABASE_URL:-}" ]; then
        return 0
    fi
    ensure_postgres || die "could not make Postgres available on 127.0.0.1:5432"
    if ! PGPASSWORD=app psql -h 127.0.0.1 -U app -d app -qtAc 'SELECT 1' >/dev/null 2>&1; then
        say "creating the local Postgres role and database app (password app, CREATEDB)"
        psql_as_postgres <<'SQL' || die "could not create the Postgres role and database app"
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app') THEN
        CREATE ROLE app LOGIN PASSWORD 'app' CREATEDB;
    ELSE
        ALTER ROLE app LOGIN PASSWORD 'app' CREATEDB;
    END IF;
END $$;
SELECT 'CREATE DATABASE app OWNER app' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'app')\gexec
SQL
    fi
    export DATABASE_URL="$DEFAULT_DATABASE_URL"
    say "Postgres: postgres://app:***@127.0.0.1:5432/app"
}

# psql as the cluster's superuser (peer authentication over the local socket), SQL on stdin.
psql_as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        su postgres -s /bin/sh -c 'psql -v ON_ERROR_STOP=1 -qtA'
    else
        sudo -u postgres psql -v ON_ERROR_STOP=1 -qtA
    fi
}

# ffmpeg and ffprobe, which worker-svc runs for media.
ensure_ffmpeg() {
    if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
        say "ffmpeg not found; installing it"
        apt_install ffmpeg
    fi
}
