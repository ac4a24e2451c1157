#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 10) from its committed
# seeds, with libFuzzer (cargo-fuzz). Needs a nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz`); without them it says so and exits 0:
# the stable test suite still replays the differential corpus
# (app::fast::tests::the_fuzz_corpus_reads_the_same_on_both_paths).
#
#   fuzz/run.sh 60                    # a minute per target
#   fuzz/run.sh 600 differential      # a long run of one target
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH="${1:-10}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(differential stream records config forms rest answers)

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: no nightly toolchain here (rustup toolchain install nightly); not run"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: cargo-fuzz is missing (cargo install cargo-fuzz); not run"
    exit 0
fi
for t in "${TARGETS[@]}"; do
    corpus="$(mktemp -d)"
    echo "== fuzz $t for ${SECONDS_EACH}s"
    cargo +nightly fuzz run -O "$t" "$corpus" "seeds/$t" -- \
        -max_total_time="$SECONDS_EACH" -max_len=16384 -print_final_stats=1 2>&1 \
        | grep -E "stat::number_of_executed_units|Done|panicked|SUMMARY|ERROR" || true
    rm -rf "$corpus"
    if [ -d "artifacts/$t" ] && [ -n "$(ls -A "artifacts/$t")" ]; then
        echo "fuzz $t: crash written to fuzz/artifacts/$t"
        exit 1
    fi
done
