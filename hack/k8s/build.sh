#!/usr/bin/env bash
# Builds (or reuses) the local control plane from the Go module proxy:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and kwok.
#
# Binaries go to $TRAINWRIGHT_CACHE/k8s/<k8s version>/bin; the Go module and
# build caches live under $TRAINWRIGHT_CACHE/go so CI and later clones reuse
# them. A second run with every binary present prints "reusing ..." and exits.
#
# Environment: TRAINWRIGHT_CACHE (default ~/.cache/trainwright), GO (default: go
# on PATH), K8S_BUILD_FORCE=1 to rebuild even if the binaries exist.
set -euo pipefail

K8S_VERSION=v1.34.4
K8S_MINOR=34
KWOK_VERSION=v0.7.0
GO_MIN=1.24

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${TRAINWRIGHT_CACHE:-$HOME/.cache/trainwright}
bin=$cache/k8s/$K8S_VERSION/bin
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)

all_present() {
	local b
	for b in "${binaries[@]}"; do
		[ -x "$bin/$b" ] || return 1
	done
	# Run them in parallel: each is a large static binary, serially this is ~0.5 s.
	local pids=()
	for b in "${binaries[@]}"; do
		if [ "$b" = kubectl ]; then
			"$bin/$b" version --client >/dev/null 2>&1 &
		else
			"$bin/$b" --version >/dev/null 2>&1 &
		fi
		pids+=($!)
	done
	local p ok=0
	for p in "${pids[@]}"; do
		wait "$p" || ok=1
	done
	return $ok
}

if [ "${K8S_BUILD_FORCE:-0}" != 1 ] && all_present; then
	echo "reusing control-plane binaries in $bin (Kubernetes $K8S_VERSION, kwok $KWOK_VERSION)"
	exit 0
fi

GO=${GO:-go}
if ! command -v "$GO" >/dev/null 2>&1; then
	echo "error: the Go toolchain ('$GO') is not on PATH; install Go >= $GO_MIN" \
		"(https://go.dev/dl/) to build the local control plane." >&2
	exit 1
fi
go_version=$("$GO" env GOVERSION 2>/dev/null || true)
go_version=${go_version#go}
ver_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
if [ -z "$go_version" ] || ! ver_ge "$go_version" "$GO_MIN"; then
	echo "error: Go ${go_version:-unknown} is too old; building Kubernetes $K8S_VERSION" \
		"needs Go >= $GO_MIN (https://go.dev/dl/)." >&2
	exit 1
fi

export GOMODCACHE=$cache/go/mod
export GOCACHE=$cache/go/build
export GOTOOLCHAIN=local
export CGO_ENABLED=0
# sum.golang.org is not always reachable; hack/k8s/gomod/go.sum pins every
# module hash of the control plane, and kwok's module zip carries its own go.sum.
export GOSUMDB=${GOSUMDB:-off}
export GOFLAGS=-mod=mod
mkdir -p "$bin" "$GOMODCACHE" "$GOCACHE"

stage=$(mktemp -d "$cache/k8s/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT

total_start=$(date +%s)
cd "$here/gomod"
if [ ! -s go.sum ]; then
	echo "resolving module graph (go mod tidy)..."
	nice -n 5 "$GO" mod tidy
fi
echo "downloading modules into $GOMODCACHE..."
nice -n 5 "$GO" mod download

ldflags_k8s="-s -w \
 -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=$K8S_MINOR \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION \
 -X k8s.io/client-go/pkg/version.gitMajor=1 \
 -X k8s.io/client-go/pkg/version.gitMinor=$K8S_MINOR"

n=${#binaries[@]}
i=0
build_one() {
	local name=$1 pkg=$2 ldflags=$3 t0
	i=$((i + 1))
	echo "building $name ($i/$n)..."
	t0=$(date +%s)
	nice -n 5 "$GO" build -trimpath -ldflags "$ldflags" -o "$stage/$name" "$pkg"
	echo "  $name built in $(($(date +%s) - t0)) s ($(du -m "$stage/$name" | cut -f1) MiB)"
}

build_one etcd go.etcd.io/etcd/server/v3 "-s -w"
build_one kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$ldflags_k8s"
build_one kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$ldflags_k8s"
build_one kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$ldflags_k8s"
build_one kubectl k8s.io/kubernetes/cmd/kubectl "$ldflags_k8s"

# kwok is installed outside the wrapper module: its k8s.io/* requirements differ
# from the replace block above. v0.8.0 dropped the built-in stages, so pin v0.7.0.
i=$((i + 1))
echo "building kwok ($i/$n)..."
t0=$(date +%s)
(cd "$stage" && GOFLAGS= GOBIN="$stage" nice -n 5 "$GO" install -trimpath \
	-ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
	"sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")
echo "  kwok built in $(($(date +%s) - t0)) s ($(du -m "$stage/kwok" | cut -f1) MiB)"

for b in "${binaries[@]}"; do
	mv -f "$stage/$b" "$bin/$b"
done
echo "control-plane binaries ready in $bin ($(($(date +%s) - total_start)) s)"
