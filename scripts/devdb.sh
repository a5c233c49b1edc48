#!/bin/sh
# devdb.sh - start or stop a mailcell-devdb in the background for scripts:
#   devdb.sh start DIR PORT   (waits until it accepts connections; pid in DIR/devdb.pid)
#   devdb.sh stop DIR
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cmd=$1 dir=$2

case "$cmd" in
start)
	port=$3
	mkdir -p "$dir/data"
	if [ -f "$dir/devdb.pid" ] && kill -0 "$(cat "$dir/devdb.pid")" 2>/dev/null; then
		exit 0
	fi
	nohup "$top/bin/mailcell-devdb" --listen "127.0.0.1:$port" --dir "$dir/data" \
		>"$dir/devdb.log" 2>&1 </dev/null &
	echo $! >"$dir/devdb.pid"
	i=0
	while ! bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; do
		i=$((i + 1))
		if [ $i -ge 150 ] || ! kill -0 "$(cat "$dir/devdb.pid")" 2>/dev/null; then
			echo "devdb: did not start; see $dir/devdb.log" >&2
			tail -5 "$dir/devdb.log" >&2
			exit 1
		fi
		sleep 0.1
	done
	;;
stop)
	if [ -f "$dir/devdb.pid" ]; then
		pid=$(cat "$dir/devdb.pid")
		kill -TERM "$pid" 2>/dev/null || true
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
		rm -f "$dir/devdb.pid"
	fi
	;;
*)
	echo "usage: devdb.sh start DIR PORT | stop DIR" >&2
	exit 2
	;;
esac
