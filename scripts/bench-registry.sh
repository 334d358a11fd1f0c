#!/usr/bin/env bash
# Push and pull a ~1 GiB OCI-SIF to a local docker-registry, against skopeo copy of the
# same image (exported as an OCI layout with the same blobs) in the same run.
# usage: scripts/bench-registry.sh [SIZE_MIB] (needs docker-registry, skopeo, /usr/bin/time)
set -euo pipefail
size=${1:-1024}
here=$(cd "$(dirname "$0")/.." && pwd)
sifovl=${SIFOVL:-$here/target/release/sifovl}
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
trap 'kill "$(cat "$work/state/registry.pid" 2>/dev/null)" 2>/dev/null; rm -rf "$work"' EXIT
REGISTRY_STATE_DIR=$work/state bash "$here/../shared/tools/start-registry.sh" "$port" >/dev/null
reg=127.0.0.1:$port

cp "$here/testdata/sample.oci.sif" "$work/big.oci.sif"
"$sifovl" add --size "$size" "$work/big.oci.sif" >/dev/null
"$sifovl" export "$work/big.oci.sif" "oci:$work/layout:big" >/dev/null

t() { /usr/bin/time -f "%e s, %M KiB max RSS" "$@" 2>&1 >/dev/null | tail -1; }
echo "image: $(stat -c %s "$work/big.oci.sif") bytes"
echo "sifovl push:            $(t "$sifovl" push "$work/big.oci.sif" "docker://$reg/bench/sifovl:1")"
echo "sifovl re-push:         $(t "$sifovl" push "$work/big.oci.sif" "docker://$reg/bench/sifovl:1")"
echo "skopeo copy (push):     $(t skopeo copy --dest-tls-verify=false "oci:$work/layout:big" "docker://$reg/bench/skopeo:1")"
echo "sifovl pull:            $(t "$sifovl" pull "docker://$reg/bench/sifovl:1" "$work/pulled.oci.sif")"
echo "skopeo copy (pull):     $(t skopeo copy --src-tls-verify=false "docker://$reg/bench/skopeo:1" "oci:$work/pulled-layout:big")"
echo "sifovl push --oras:     $(t "$sifovl" push "$work/big.oci.sif" "oras://$reg/bench/oras:1")"
echo "sifovl pull oras://:    $(t "$sifovl" pull "oras://$reg/bench/oras:1" "$work/pulled.sif")"
