#!/usr/bin/env bash
# A stand-in for qemu-system-x86_64 (QEMU=tests/fake-qemu.sh) for the
# runner's tests under bad input (tests/hostile.rs). It boots nothing: it
# does what the test asks through the environment, so each way a QEMU, a
# loader or a guest can misbehave is one test away.
#
#   FAKE_LOG     append one line per start: the first scenario, and each
#                image it was given (-kernel, -initrd, -cdrom) with its cksum
#   FAKE_HOOK    a shell command run first (FAKE_BOOT holds the start count)
#   FAKE_SERIAL  a file printed on stdout, the serial line; an @ in the name
#                stands for the first scenario on the command line
#   FAKE_FLOOD   that many bytes of 'x' after it, with no newline
#   FAKE_STDERR  lines for stderr (\n between them)
#   FAKE_CHILD   a file: leave a grandchild (sleep 300) behind, its pid there
#   FAKE_SLEEP   seconds to wait before exiting
#   FAKE_STATUS  the exit status (default 0, a reset under -no-reboot)
set -u
kernel="" initrd="" cdrom="" append=""
while [ $# -gt 0 ]; do
  case "$1" in
    -kernel) kernel=$2; shift ;;
    -initrd) initrd=$2; shift ;;
    -cdrom) cdrom=$2; shift ;;
    -append) append=$2; shift ;;
  esac
  shift
done
scenarios=${append#*scenarios=}
scenarios=${scenarios%% *}
first=${scenarios%%,*}

count_file="${FAKE_LOG:-/dev/null}.count"
boot=1
if [ -n "${FAKE_LOG:-}" ]; then
  # Boots run side by side (-j): the count is read and written under a
  # lock, or two starts read the same count.
  exec 9>>"$count_file.lock"
  flock 9
  boot=$(( $(cat "$count_file" 2>/dev/null || echo 0) + 1 ))
  echo "$boot" >"$count_file"
  exec 9>&-
  line="boot=$boot first=$first"
  for image in "$kernel" "$initrd" "$cdrom"; do
    [ -n "$image" ] && line="$line $image=$(cksum <"$image" | cut -d' ' -f1)"
  done
  echo "$line" >>"$FAKE_LOG"
fi
export FAKE_BOOT=$boot
[ -n "${FAKE_HOOK:-}" ] && eval "$FAKE_HOOK"
[ -n "${FAKE_SERIAL:-}" ] && cat "${FAKE_SERIAL//@/$first}"
if [ -n "${FAKE_FLOOD:-}" ]; then
  head -c "$FAKE_FLOOD" /dev/zero | tr '\0' x
fi
[ -n "${FAKE_STDERR:-}" ] && printf '%b\n' "$FAKE_STDERR" >&2
if [ -n "${FAKE_CHILD:-}" ]; then
  sleep 300 &
  echo $! >"$FAKE_CHILD"
fi
[ -n "${FAKE_SLEEP:-}" ] && sleep "$FAKE_SLEEP"
exit "${FAKE_STATUS:-0}"
