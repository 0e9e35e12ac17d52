#!/usr/bin/env bash
# Build dbfleet's .deb: the release binary, its man pages and shell completions, then
# `cargo deb` (installed with `cargo install cargo-deb` when missing). The package lands in
# target/debian/ (or $CARGO_TARGET_DIR/debian/); install it with
#
#   sudo apt install ./target/debian/dbfleet_*.deb
#
# What it holds: crates/cli/Cargo.toml, [package.metadata.deb]. The unit
# (packaging/debian/dbfleet.service) is installed but not enabled; see README, "Install".
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
if ! cargo deb --version >/dev/null 2>&1; then
  echo "package.sh: installing cargo-deb (cargo install cargo-deb --locked)" >&2
  cargo install cargo-deb --locked
fi
cargo build --release -p cli
target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin="$target_dir/release/dbfleet"
out="$target_dir/release/package"
rm -rf "$out"
mkdir -p "$out/man" "$out/completions"
"$bin" man --out "$out/man" >/dev/null
"$bin" completions bash >"$out/completions/dbfleet"
"$bin" completions zsh >"$out/completions/_dbfleet"
"$bin" completions fish >"$out/completions/dbfleet.fish"
cargo deb -p cli --no-build "$@"
