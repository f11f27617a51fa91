#!/bin/sh
# Start a Redis master, replica or Sentinel for docker-compose.yml.
#   entrypoint.sh master|replica|sentinel [extra redis-server arguments]
# On the first start the config template is copied to the data folder with the role, the
# announced host name (ANNOUNCE_HOST) and the password (from the compose secret) added;
# later starts reuse that copy, which Redis and Sentinel keep up to date.
set -eu

role=${1:?usage: entrypoint.sh master|replica|sentinel}
shift
here=$(cd "$(dirname "$0")" && pwd)
data_dir=${REDIS_DATA_DIR:-/data}
secret=${REDIS_SECRET_FILE:-/run/secrets/redis_password}
sentinel_template=${SENTINEL_TEMPLATE:-/opt/dtf-sentinel/sentinel.conf}
announce=${ANNOUNCE_HOST:-$(hostname)}

password=""
if [ -s "$secret" ]; then
    password=$(cat "$secret")
fi
# Redis config strings are double-quoted; escape backslashes and quotes.
quoted=$(printf '%s' "$password" | sed 's/[\\"]/\\&/g')

case "$role" in
    master | replica)
        conf="$data_dir/redis.conf"
        template="$here/redis.conf"
        ;;
    sentinel)
        conf="$data_dir/sentinel.conf"
        template="$sentinel_template"
        ;;
    *)
        echo "entrypoint.sh: unknown role '$role' (master, replica or sentinel)" >&2
        exit 2
        ;;
esac

# printf, not echo: dash's echo would eat the backslashes of an escaped password.
write_config() {
    cat "$template"
    printf '\n# Added by entrypoint.sh on the first start.\ndir %s\n' "$data_dir"
    if [ "$role" = sentinel ]; then
        printf 'sentinel announce-ip %s\n' "$announce"
        if [ -n "$password" ]; then
            printf 'sentinel auth-pass mymaster "%s"\n' "$quoted"
        fi
        return 0
    fi
    printf 'replica-announce-ip %s\n' "$announce"
    if [ "$role" = replica ]; then
        printf 'replicaof %s 6379\n' "${MASTER_HOST:-redis-master}"
    fi
    if [ -n "$password" ]; then
        printf 'requirepass "%s"\nmasterauth "%s"\n' "$quoted" "$quoted"
    fi
}

if [ ! -f "$conf" ]; then
    mkdir -p "$data_dir"
    old_umask=$(umask)
    umask 077
    write_config >"$conf.tmp"
    mv "$conf.tmp" "$conf"
    umask "$old_umask"
fi

as_redis=""
if [ "$(id -u)" = 0 ] && id redis >/dev/null 2>&1; then
    chown -R redis:redis "$data_dir"
    if command -v su-exec >/dev/null 2>&1; then
        as_redis="su-exec redis"
    elif command -v gosu >/dev/null 2>&1; then
        as_redis="gosu redis"
    fi
fi

if [ "$role" = sentinel ]; then
    # shellcheck disable=SC2086  # $as_redis is empty or two words on purpose
    exec $as_redis redis-server "$conf" --sentinel "$@"
fi
# shellcheck disable=SC2086
exec $as_redis redis-server "$conf" "$@"
