#!/bin/bash
# run.sh - `make run`: a development mail server on this machine. Starts the
# dev database under var/, writes var/mailcell.conf, creates the demo domain
# example.test and user demo@example.test, and prints what is listening.
# `make stop` (run.sh stop) stops what it started.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
var="$top/var"
port=${MAILCELL_DEVDB_PORT:-27017}
conf="$var/mailcell.conf"
etc=/etc/mailcell/mailcell.conf

# One socket-activated listener: a session process per connection, as in production.
start_listener() { # name port args...
	name=$1 lport=$2
	shift 2
	stop_listener "$name"
	nohup systemd-socket-activate -l "127.0.0.1:$lport" --inetd -E MONGOC_DISABLE_SHM=1 -a "$top/bin/$@" \
		>>"$var/log/$name.log" 2>&1 </dev/null &
	echo $! >"$var/run/$name.pid"
}

stop_listener() {
	if [ -f "$var/run/$1.pid" ]; then
		kill "$(cat "$var/run/$1.pid")" 2>/dev/null || true
		rm -f "$var/run/$1.pid"
	fi
}

LISTENERS="smtp submission submissions pop3 pop3s"

if [ "${1:-}" = stop ]; then
	for l in $LISTENERS relay-worker; do stop_listener "$l"; done
	scripts/devdb.sh stop "$var/devdb"
	echo "mailcell: stopped the listeners, the relay worker and the dev database"
	exit 0
fi

mkdir -p "$var/devdb" "$var/tls" "$var/run" "$var/log"
if [ ! -f "$conf" ]; then
	cat >"$conf" <<CONF
# Written by 'make run' for the development server; see units/mailcell.conf.example.
hostname = mail.example.test
mongodb_uri = mongodb://127.0.0.1:$port
database = mailcell
tls_cert = $var/tls/cert.pem
tls_key = $var/tls/key.pem
templates_dir = $top/templates
# Plain-text AUTH is for loopback testing only; never in production.
allow_plaintext_auth = yes
log_target = stderr
CONF
fi
# Sessions touch the trigger when they queue mail; the relay worker watches it.
grep -q '^relay_trigger' "$conf" || echo "relay_trigger = $var/run/relay.trigger" >>"$conf"
if [ ! -f "$var/tls/cert.pem" ]; then
	openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=mail.example.test" \
		-keyout "$var/tls/key.pem" -out "$var/tls/cert.pem" 2>/dev/null
	chmod 600 "$var/tls/key.pem"
fi

scripts/devdb.sh start "$var/devdb" "$port"
export MAILCELL_CONFIG="$conf"
export MONGOC_DISABLE_SHM=1   # no /dev/shm counters segment per session process

bin/mailcell domain list | grep -qx example.test || bin/mailcell domain add example.test
if ! bin/mailcell user list | cut -f1 | grep -qx demo@example.test; then
	pw=$(openssl rand -base64 12 | tr -d '/+=' | cut -c1-12)
	printf '%s\n' "$pw" | bin/mailcell user add demo@example.test --name "Demo User"
	printf '%s\n' "$pw" >"$var/demo-password"
	chmod 600 "$var/demo-password"
fi

bin/mailcell alias list | cut -f1 | grep -qx postmaster@example.test ||
	bin/mailcell alias add postmaster@example.test demo@example.test

start_listener smtp 2525 smtp-session -c "$conf"
start_listener submission 2587 smtp-session -c "$conf" --submission
start_listener submissions 2465 smtp-session -c "$conf" --tls --submission
start_listener pop3 1110 pop3-session -c "$conf"
start_listener pop3s 1995 pop3-session -c "$conf" --tls

# The relay worker: delivers queued outbound mail (and bounces), at once when
# a session queues something, otherwise every 30 seconds.
stop_listener relay-worker
nohup bin/relay-worker -c "$conf" --loop 30 >>"$var/log/relay-worker.log" 2>&1 </dev/null &
echo $! >"$var/run/relay-worker.pid"

note=""
if [ ! -e "$etc" ] && [ "$(id -u)" = 0 ]; then
	mkdir -p /etc/mailcell
	ln -s "$conf" "$etc"
	note="  $etc -> $conf (made now, so that bin/mailcell needs no -c; remove it for production)"
elif [ -L "$etc" ] && [ "$(readlink "$etc")" = "$conf" ]; then
	note="  $etc -> $conf"
fi

cat <<INFO

mailcell development server is running.

Listening (one session process per connection, started by systemd-socket-activate):
  127.0.0.1:2525    SMTP (MX mode: mail for local domains from anyone)
  127.0.0.1:2587    submission (AUTH required; STARTTLS with a self-signed certificate)
  127.0.0.1:2465    submissions (implicit TLS, AUTH required)
  127.0.0.1:1110    POP3 (STLS offered)
  127.0.0.1:1995    POP3S (implicit TLS)
  127.0.0.1:$port   dev database (mailcell-devdb: FerretDB on SQLite, data in $var/devdb/data)
Relay worker: bin/relay-worker --loop 30 (outbound queue: bin/mailcell queue list)

Configuration: $conf
$note
Demo domain:   example.test
Demo user:     demo@example.test   password: $(cat "$var/demo-password")

Try:
  swaks --server 127.0.0.1:2525 --from someone@example.org --to demo@example.test
  swaks --server 127.0.0.1:2587 --tls --auth-user demo@example.test \\
        --auth-password "\$(cat $var/demo-password)" --from demo@example.test --to demo@example.test
  curl -s --user "demo@example.test:\$(cat $var/demo-password)" pop3://127.0.0.1:1110/1
  curl -sk --user "demo@example.test:\$(cat $var/demo-password)" pop3s://127.0.0.1:1995/
  export MAILCELL_CONFIG=$conf
  bin/mailcell mailbox list demo@example.test
  bin/mailcell user list
  make stop          # stops the listeners and the dev database
Logs: $var/log/ (sessions), $var/devdb/devdb.log
INFO
