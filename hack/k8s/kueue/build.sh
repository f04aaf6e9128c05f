#!/usr/bin/env bash
# Builds (or reuses) Kueue's controller manager from the Go module proxy and caches the
# manifests the local control plane applies with it (hack/k8s/cluster.sh):
#   $TRAINWRIGHT_CACHE/kueue/<version>/bin/kueue          the controller manager
#   $TRAINWRIGHT_CACHE/kueue/<version>/crd/               config/components/crd of the module
#   $TRAINWRIGHT_CACHE/kueue/<version>/webhook/           config/components/webhook of the module
#   $TRAINWRIGHT_CACHE/kueue/<version>/visibility/        config/components/visibility (APIServices)
# The manifests come from the module's own source tree in the Go module cache, so the
# cluster never downloads anything when it starts. Called by hack/k8s/build.sh
# (`make k8s-bin`); with everything present it prints "reusing ..." and exits.
#
# Environment: TRAINWRIGHT_CACHE (default ~/.cache/trainwright), GO (default: go on PATH),
# K8S_BUILD_FORCE=1 to rebuild.
set -euo pipefail

KUEUE_VERSION=$(cat "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/VERSION")
GO_MIN=1.25

# shellcheck source=../../lib/go.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../../lib/go.sh"
cache=${TRAINWRIGHT_CACHE:-$HOME/.cache/trainwright}
dest=$cache/kueue/$KUEUE_VERSION

if [ "${K8S_BUILD_FORCE:-0}" != 1 ] && [ -x "$dest/bin/kueue" ] &&
	[ -s "$dest/crd/bases/kueue.x-k8s.io_workloads.yaml" ] && [ -s "$dest/webhook/manifests.yaml" ] &&
	[ -s "$dest/visibility/apiservice_v1beta2.yaml" ] &&
	"$dest/bin/kueue" --help >/dev/null 2>&1; then
	echo "reusing Kueue $KUEUE_VERSION in $dest"
	exit 0
fi

require_go "Kueue $KUEUE_VERSION" "$GO_MIN"
go_build_env "$cache"
mkdir -p "$cache/kueue"
stage=$(mktemp -d "$cache/kueue/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT

echo "building Kueue $KUEUE_VERSION from the Go module proxy;" \
	"a cold build takes 5-15 min on 2 cores, progress below"
t0=$(date +%s)
module_dir=$(cd "$stage" && "$GO" mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" |
	awk -F'"' '/"Dir":/ {print $4}')
[ -d "$module_dir/config/components/crd/bases" ] ||
	{ echo "error: the Kueue module has no config/components/crd/bases in $module_dir" >&2; exit 1; }
# -v names each package as it compiles: the progress of a long cold build.
if ! (cd "$stage" && GOBIN="$stage/bin" nice -n 5 "$GO" install -v -trimpath \
	-ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" \
	"sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION" 2>&1 | tee "$stage/build.log" |
	awk '{n++} n % 100 == 0 {print "  compiled " n " packages (" $0 ")"; fflush()}'); then
	tail -n 20 "$stage/build.log" >&2
	echo "error: building Kueue $KUEUE_VERSION failed (the lines above say why)" >&2
	exit 1
fi
mkdir -p "$stage/out/bin"
mv "$stage/bin/kueue" "$stage/out/bin/kueue"
# Module files are read-only in the cache; copies are made writable so a rebuild can replace them.
cp -r "$module_dir/config/components/crd" "$module_dir/config/components/webhook" \
	"$module_dir/config/components/visibility" "$stage/out/"
chmod -R u+w "$stage/out"
rm -rf "$dest"
mv "$stage/out" "$dest"
echo "  kueue built in $(($(date +%s) - t0)) s ($(du -m "$dest/bin/kueue" | cut -f1) MiB); manifests in $dest"
