#!/usr/bin/env bash
# Runs the whole test suite: the formatting check (make lint), the cmocka
# unit and engine tests (normal build
# and under AddressSanitizer + UndefinedBehaviorSanitizer), then the
# end-to-end tests over real HTTP with node's test runner, against the
# normal server and again against the sanitizer-built one.  Ends with one
# line "N passed, N failed".
#
# Expects `make all unit` done (the README's test command does it).
# SKIP_SAN=1 skips the sanitizer pass (for quick local runs only).
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# count_cmocka FILE: add the PASSED/FAILED counts of one cmocka run.
count_cmocka() {
	local p f
	p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$1" | tail -n1)
	f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$1" | tail -n1)
	passed=$((passed + ${p:-0}))
	failed=$((failed + ${f:-0}))
}

# run_units DIR: every cmocka binary under DIR/tests.
run_units() {
	local t rc
	while IFS= read -r t; do
		echo "== $t"
		"$t" >"$log" 2>&1
		rc=$?
		cat "$log"
		count_cmocka "$log"
		if [ $rc -ne 0 ] && ! grep -q '^\[  FAILED  \]' "$log"; then
			echo "!! $t exited with $rc without a cmocka summary"
			failed=$((failed + 1))
		fi
	done < <(find "$1/tests" -type f -name 'test_*' -perm -u+x | sort)
}

# Formatting against the committed .clang-format counts as one test.
echo "== make lint"
if make -s lint >"$log" 2>&1; then
	passed=$((passed + 1))
else
	cat "$log"
	echo "!! make lint: files differ from .clang-format"
	failed=$((failed + 1))
fi

run_units build

if [ "${SKIP_SAN:-0}" != 1 ]; then
	echo "== building under AddressSanitizer + UndefinedBehaviorSanitizer"
	if make -s SAN=1 unit >"$log" 2>&1; then
		# ONNX Runtime is not instrumented; its own allocations at exit
		# are not ours to report.
		export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
		export LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp
		export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
		run_units build-san
	else
		cat "$log"
		echo "!! sanitizer build failed"
		failed=$((failed + 1))
	fi
fi

# run_e2e LABEL: every tests/e2e/*.test.mjs with node's test runner, against
# $FRAPI_BIN (build/frapi when unset).
run_e2e() {
	local p f
	echo "== end-to-end tests (node --test), $1"
	node --test --test-concurrency=1 --test-reporter=tap "${e2e[@]}" \
		2>&1 | tee "$log"
	p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$log" | tail -n1)
	f=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$log" | tail -n1)
	passed=$((passed + ${p:-0}))
	failed=$((failed + ${f:-0}))
	[ -z "$p" ] && failed=$((failed + 1))
}

# End-to-end tests over HTTP, if any are present.
shopt -s nullglob
e2e=(tests/e2e/*.test.mjs)
if [ ${#e2e[@]} -gt 0 ]; then
	# Their npm packages (smtp-server for the mail tests), exactly as
	# pinned by tests/e2e/package-lock.json.
	if [ tests/e2e/package-lock.json -nt \
		tests/e2e/node_modules/.package-lock.json ]; then
		(cd tests/e2e && npm ci --silent --no-audit --no-fund) ||
			failed=$((failed + 1))
	fi
	run_e2e "normal build"
fi

# The same end-to-end tests against the server built with the sanitizers.
# Each report goes to a file of its own (the tests capture the server's
# stderr); any file there at the end is a failure.
if [ ${#e2e[@]} -gt 0 ] && [ "${SKIP_SAN:-0}" != 1 ]; then
	if make -s SAN=1 all >"$log" 2>&1; then
		reports=$(mktemp -d)
		# A small quarantine keeps resident memory meaningful for the
		# test that checks the export streams in flat memory.
		ASAN_OPTIONS=detect_leaks=1:quarantine_size_mb=4:log_path=$reports/asan \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan \
		LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp:print_suppressions=0 \
		FRAPI_BIN=$PWD/build-san/frapi \
			run_e2e "server under AddressSanitizer + UBSan"
		if [ -n "$(ls -A "$reports")" ]; then
			echo "!! sanitizer reports from the server:"
			cat "$reports"/*
			failed=$((failed + 1))
		fi
		rm -rf "$reports"
	else
		cat "$log"
		echo "!! sanitizer build of the server failed"
		failed=$((failed + 1))
	fi
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
