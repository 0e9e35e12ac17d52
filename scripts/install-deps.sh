#!/usr/bin/env bash
# Installs what dbfleet's build, demo and tests need, then checks that every program and file
# they use is there. The one list is scripts/deps.list (`dbfleet doctor` reads it too).
# Installs only what is missing: `apt-get update` once, then one `apt-get install`.
# Needs root (or sudo) when something is missing. Exits non-zero, naming the package for
# each missing item, when anything is still missing afterwards.
# The Debian packages the list names, spelled out so that a grep of scripts/ finds them
# (a test keeps this line equal to deps.list):
# packages: curl e2fsprogs etcd-server gcc haproxy iptables libprotobuf-dev mariadb-backup mariadb-client mariadb-server mount prometheus prometheus-mysqld-exporter protobuf-compiler python3 systemd util-linux
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
list="$here/deps.list"

# Debian puts servers in /usr/sbin, which a user's PATH may lack; dbfleet looks there too.
search_path="$PATH:/usr/sbin:/usr/bin:/sbin:/usr/local/sbin:/usr/local/bin"

# present WHAT: is the program (in PATH or sbin) or the absolute file there?
present() {
  case "$1" in
    /*) [ -e "$1" ] ;;
    *) PATH="$search_path" command -v "$1" >/dev/null 2>&1 ;;
  esac
}

# The entries: "what package for purpose...", comments and blank lines left out.
mapfile -t entries < <(grep -v '^[[:space:]]*\(#\|$\)' "$list")

missing_pkgs=()
for e in "${entries[@]}"; do
  read -r what pkg _ <<<"$e"
  present "$what" && continue
  [ "$pkg" = "-" ] && continue
  case " ${missing_pkgs[*]} " in *" $pkg "*) ;; *) missing_pkgs+=("$pkg") ;; esac
done

if [ ${#missing_pkgs[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || {
      echo "install-deps: need root or sudo to install: ${missing_pkgs[*]}" >&2
      exit 1
    }
    SUDO="sudo"
  fi
  echo "install-deps: installing ${missing_pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # --no-install-recommends: only what the list names. A Recommends we rely on (like
  # libprotobuf-dev) is named in the list itself, and the check below catches one we missed.
  # Debian's maintainer scripts try to start services; nothing needs them, and the sandbox
  # starts its own servers.
  $SUDO apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null
fi

# Check every entry, whatever was installed: a package that no longer provides a file, or a
# file that only a Recommends provides, shows here and not as a build failure later.
failed=0
for e in "${entries[@]}"; do
  read -r what pkg needed purpose <<<"$e"
  present "$what" && continue
  failed=1
  if [ "$pkg" = "-" ]; then
    echo "install-deps: missing $what (needed for $needed: $purpose); apt cannot install it" >&2
  else
    echo "install-deps: missing $what (needed for $needed: $purpose); install the Debian package $pkg" >&2
  fi
done
exit "$failed"
