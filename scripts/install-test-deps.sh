#!/usr/bin/env bash
# Install the independent oracles the test suite checks our output with (e2fsprogs,
# squashfs-tools, squashfs-tools-ng, skopeo, umoci, attr, docker-registry, ...) and the FUSE
# stack SingularityCE runs --writable jobs on (squashfuse, fuse2fs, fuse-overlayfs).
# Idempotent and quiet when everything is already there. Needs root (or sudo) for apt.
set -euo pipefail

packages=(e2fsprogs squashfs-tools squashfs-tools-ng squashfuse fuse3 fuse2fs fuse-overlayfs skopeo umoci attr tar gzip zstd xz-utils python3
          openssl curl docker-registry apache2-utils man-db)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=; [ "$(id -u)" -eq 0 ] || sudo=sudo
  # Keep docker-registry's postinst from starting a service on all interfaces.
  policy_added=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  echo "installing test dependencies: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -n "$policy_added" ] && $sudo rm -f /usr/sbin/policy-rc.d
fi
exit 0
