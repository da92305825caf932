#!/usr/bin/env bash
# Install what the testbed needs on a fresh Debian/Ubuntu machine, as root,
# without questions: QEMU (all boot paths), xorriso and OVMF (the real-Limine
# ISO paths), gdb (`runner run --gdb`), and the bare-metal Rust target. Does
# nothing that is already done.
set -euo pipefail

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v xorriso >/dev/null || need+=(xorriso)
# `runner run --gdb`, and the test that attaches with it.
command -v gdb >/dev/null || need+=(gdb)
[ -e /usr/share/OVMF/OVMF_CODE.fd ] || [ -e /usr/share/OVMF/OVMF_CODE_4M.fd ] || need+=(ovmf)

if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then sudo="sudo -n"; else
      echo "deps: need root to install ${need[*]}: run 'sudo make deps' or install them yourself" >&2
      exit 1
    fi
  fi
  if ! command -v apt-get >/dev/null; then
    echo "deps: no apt-get here: install ${need[*]} (QEMU for x86_64, xorriso, OVMF) with your package manager" >&2
    exit 1
  fi
  echo "deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if command -v rustup >/dev/null; then
  rustup target list --installed | grep -qx x86_64-unknown-none || rustup target add x86_64-unknown-none
fi
