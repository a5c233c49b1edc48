#!/bin/sh
# run.sh - runs the harnesses fuzz/fuzz.mk built: per NAME, replays
# fuzz/regress/NAME/*, then fuzzes $FUZZ_SECONDS from fuzz/corpus/NAME/; or,
# with FUZZ_MODE=repro, only replays (regress and seeds, or $FUZZ_INPUT).
# Exits non-zero if anything crashed; prints runs and exec/s per harness.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
bin=build/fuzz
secs=${FUZZ_SECONDS:-30}
mode=${FUZZ_MODE:-fuzz}

# Per-harness input size bound: long enough for the longest lines each must see.
max_len() {
	case $1 in
	smtp) echo 20000 ;; smtp_data|headers) echo 70000 ;; pop3) echo 4096 ;;
	address) echo 1024 ;; template) echo 8192 ;; *) echo 4096 ;;
	esac
}

# stderr of the code under test (its log lines) is closed; crash reports still show.
common="-rss_limit_mb=2048 -timeout=10 -close_fd_mask=2"
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export UBSAN_OPTIONS

# make fuzz-repro FUZZ_INPUT=FILE...: each file through the harness named in its
# path (.../artifacts|regress|corpus/NAME/...) or $FUZZ_TARGET, with full output.
if [ "$mode" = repro ] && [ -n "${FUZZ_INPUT:-}" ]; then
	st=0
	for f in $FUZZ_INPUT; do
		name=${FUZZ_TARGET:-$(echo "$f" | sed -n 's#.*\(artifacts\|regress\|corpus\)/\([a-z0-9_]*\)/.*#\2#p')}
		if [ -z "$name" ] || [ ! -x "$bin/fuzz_$name" ]; then
			echo "fuzz: which harness for $f? set FUZZ_TARGET (one of: $*)" >&2
			exit 2
		fi
		echo "== fuzz_$name $f"
		"$bin/fuzz_$name" -rss_limit_mb=2048 -timeout=10 "$f" || st=1
	done
	exit $st
fi

failed=""
summary=""
for name in "$@"; do
	exe=$bin/fuzz_$name
	dict=fuzz/dict/$name.dict
	[ -f "$dict" ] && d="-dict=$dict" || d=""
	mkdir -p "$bin/artifacts/$name" "$bin/corpus/$name"
	art="-artifact_prefix=$bin/artifacts/$name/"
	if [ "$mode" = repro ]; then
		files=$(find "fuzz/regress/$name" "fuzz/corpus/$name" -type f 2>/dev/null | sort)
		[ -z "$files" ] && continue
		echo "== fuzz_$name: replaying $(echo "$files" | wc -l) inputs"
		# shellcheck disable=SC2086
		if ! "$exe" $common $files >"$bin/$name.log" 2>&1; then
			grep -E 'ERROR: |SUMMARY: |fuzz oracle: |^Running: ' "$bin/$name.log" | tail -n 20
			failed="$failed $name"
		fi
		continue
	fi
	regress=$(find "fuzz/regress/$name" -type f 2>/dev/null | sort)
	if [ -n "$regress" ]; then
		echo "== fuzz_$name: replaying $(echo "$regress" | wc -w) regression inputs"
		# shellcheck disable=SC2086
		if ! "$exe" $common $regress >"$bin/$name.regress.log" 2>&1; then
			tail -n 40 "$bin/$name.regress.log"
			echo "fuzz_$name: a regression input crashes again (log: $bin/$name.regress.log)"
			failed="$failed $name"
			continue
		fi
	fi
	echo "== fuzz_$name: fuzzing for ${secs}s"
	# shellcheck disable=SC2086
	"$exe" $common $d $art -max_len="$(max_len "$name")" -max_total_time="$secs" \
		-print_final_stats=1 "$bin/corpus/$name" "fuzz/corpus/$name" >"$bin/$name.log" 2>&1
	st=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$bin/$name.log")
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$bin/$name.log")
	cov=$(grep -E '^#[0-9]+.*cov: ' "$bin/$name.log" | tail -n 1 | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
	line="fuzz_$name: ${execs:-?} runs, ${rate:-?} exec/s, cov ${cov:-?}"
	if [ $st -ne 0 ]; then
		grep -E 'ERROR: |SUMMARY: |fuzz oracle: |Test unit written to' "$bin/$name.log" | head -n 20
		crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$bin/$name.log" | tail -n 1)
		echo "fuzz_$name FAILED (log: $bin/$name.log)"
		[ -n "$crash" ] && echo "  reproduce: $exe $crash   (or: make fuzz-repro FUZZ_INPUT=$crash)"
		line="$line: FAILED"
		failed="$failed $name"
	fi
	echo "$line"
	summary="$summary
$line"
done
[ -n "$summary" ] && printf '== fuzz summary%s\n' "$summary"
if [ -n "$failed" ]; then
	echo "fuzz: FAILED:$failed"
	exit 1
fi
echo "fuzz: no crashes"
