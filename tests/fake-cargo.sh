#!/usr/bin/env bash
# A stand-in for cargo (CARGO=tests/fake-cargo.sh) for the runner's tests
# (tests/hostile.rs): it builds nothing.
#
#   FAKE_CARGO_LOG    a file: one line per run, "cwd=<dir> target=<dir>", the
#                     target directory resolved as cargo resolves it (against
#                     its working directory)
#   FAKE_CARGO_CHILD  a file: start a long "rustc" (sleep 300), write its pid
#                     there, and wait for it, as cargo waits for rustc
#   FAKE_CARGO_FROM   a directory holding a built guest and loader: copied
#                     into the target directory and reported the way
#                     `cargo build --message-format=json` reports artifacts
set -u
target=${CARGO_TARGET_DIR:-target}
case "$target" in
  /*) ;;
  *) target="$PWD/$target" ;;
esac
[ -n "${FAKE_CARGO_LOG:-}" ] && echo "cwd=$PWD target=$target" >>"$FAKE_CARGO_LOG"
if [ -n "${FAKE_CARGO_CHILD:-}" ]; then
  sleep 300 &
  echo $! >"$FAKE_CARGO_CHILD"
  wait
fi
if [ -n "${FAKE_CARGO_FROM:-}" ]; then
  out="$target/x86_64-unknown-none/release"
  mkdir -p "$out"
  for name in guest loader; do
    cp "$FAKE_CARGO_FROM/$name" "$out/$name"
    printf '{"reason":"compiler-artifact","target":{"name":"%s","kind":["bin"]},"executable":"%s"}\n' \
      "$name" "$out/$name"
  done
fi
