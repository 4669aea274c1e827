#!/usr/bin/env bash
# A bounded libFuzzer run of the HTTP request path (fuzz_targets/http_request.rs), starting
# from the committed corpus. Fails, naming the reproducer, when the fuzzer finds a crash.
#
#   fuzz/run.sh                      # 60 s, as tests/run.sh runs it
#   FUZZ_TIME=600 fuzz/run.sh        # longer
#   FUZZ_TIME=600 fuzz/run.sh --keep # ... and merge what it found into the committed corpus
#   fuzz/run.sh --reproduce FILE     # run one input (a crash artifact) once
#
# Works on a stable toolchain: cargo-fuzz passes unstable rustc flags (-Z...), which
# RUSTC_BOOTSTRAP=1 lets stable accept. No sanitizer: the code under test is safe Rust, and
# AddressSanitizer would halve the executions per second for little; panics, overflow checks
# and debug assertions (on in cargo-fuzz builds) are what this target looks for.
set -euo pipefail
# A reproducer path is taken as given from where the script was started.
if [ "${1:-}" = "--reproduce" ]; then
  reproducer="$(realpath "${2:?usage: fuzz/run.sh --reproduce FILE}")"
fi
cd "$(dirname "$0")"

target=http_request
time_budget="${FUZZ_TIME:-60}"
corpus="corpus/$target"
artifacts="artifacts/$target"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
# The server's files: on tmpfs when there is one (the store fsyncs), removed at exit.
scratch_parent=/dev/shm
if [ ! -d "$scratch_parent" ] || [ ! -w "$scratch_parent" ]; then scratch_parent="${TMPDIR:-/tmp}"; fi
scratch="$(mktemp -d -p "$scratch_parent" tusk-fuzz.XXXXXX)"
found="$(mktemp -d)"
trap 'rm -rf "$scratch" "$found"' EXIT
export TUSK_FUZZ_SCRATCH="$scratch"
fuzz=(cargo fuzz run --sanitizer none "$target")

# Cheap to build, cheap to run: libFuzzer's own limits keep one input from stalling the run.
libfuzzer_flags=(-timeout=20 -rss_limit_mb=4096 -max_len=4096)

if [ "${1:-}" = "--reproduce" ]; then
  "${fuzz[@]}" "$reproducer" -- "${libfuzzer_flags[@]}"
  exit
fi

mkdir -p "$corpus" "$artifacts"
cargo fuzz build --sanitizer none "$target"
# New finds go to a scratch directory ($found), so the committed corpus changes only on
# --keep.
status=0
"${fuzz[@]}" "$found" "$corpus" -- "${libfuzzer_flags[@]}" \
  -max_total_time="$time_budget" -print_final_stats=1 || status=$?
if [ "$status" -ne 0 ]; then
  crash="$(ls -t "$artifacts"/* 2>/dev/null | head -n 1 || true)"
  echo "fuzz: $target failed (exit $status)." >&2
  if [ -n "$crash" ]; then
    echo "fuzz: reproducer: fuzz/$crash" >&2
    echo "fuzz: run it with: fuzz/run.sh --reproduce $crash" >&2
  fi
  exit "$status"
fi
if [ "${1:-}" = "--keep" ]; then
  # Only inputs that reach code the corpus does not go in; counting edges alone (not how
  # often each is hit) keeps the corpus to a few hundred files.
  "${fuzz[@]}" "$corpus" "$found" -- -merge=1 -use_counters=0 "${libfuzzer_flags[@]}"
  echo "fuzz: corpus now $(ls "$corpus" | wc -l) files"
fi
