#!/bin/sh
# run-unit.sh - runs the C unit test binaries given as arguments, each with its
# own cmocka summary, and fails if any of them fails. Store tests use the dev
# database named by $MAILCELL_TEST_MONGODB_URI (scripts/check.sh starts one).
set -u
failed=0
for t in "$@"; do
	echo "== $t"
	if ! "$t"; then
		echo "FAILED: $t"
		failed=$((failed + 1))
	fi
done
echo "unit test programs: $# run, $failed failed"
[ "$failed" -eq 0 ]
