#!/usr/bin/env bash
# Builds (or reuses) the local cluster's binaries from the Go module proxy:
#   control plane  etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok
#   real node      kubelet, kube-proxy (the same k8s.io v1.34.4 module set), coredns
#   queues         Kueue's controller manager and its manifests (hack/k8s/kueue/build.sh)
#
# Binaries go to $TRAINWRIGHT_CACHE/k8s/<k8s version>/bin; the Go module and build caches
# live under $TRAINWRIGHT_CACHE/go so CI and later clones reuse them. Only the binaries
# that are missing (or do not run) are built; with all present it prints "reusing ..."
# and exits.
#
# Environment: TRAINWRIGHT_CACHE (default ~/.cache/trainwright), GO (default: go on PATH),
# K8S_BUILD_FORCE=1 to rebuild every binary even if it exists.
set -euo pipefail

K8S_VERSION=v1.34.4
K8S_MINOR=34
KWOK_VERSION=v0.7.0
COREDNS_VERSION=v1.14.7
GO_MIN=1.24

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib/go.sh
. "$here/../lib/go.sh"
cache=${TRAINWRIGHT_CACHE:-$HOME/.cache/trainwright}
bin=$cache/k8s/$K8S_VERSION/bin
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok
	kubelet kube-proxy coredns)

# works NAME: the binary exists and prints its version (a truncated build does not).
works() {
	local b=$1
	[ -x "$bin/$b" ] || return 1
	case "$b" in
	kubectl) "$bin/$b" version --client >/dev/null 2>&1 ;;
	coredns) "$bin/$b" -version >/dev/null 2>&1 ;;
	*) "$bin/$b" --version >/dev/null 2>&1 ;;
	esac
}

# Kueue (run beside the control plane, hack/k8s/cluster.sh) has its own version and cache
# dir: hack/k8s/kueue/build.sh builds or reuses it; KUEUE=0 skips it.
if [ "${KUEUE:-1}" != 0 ]; then
	bash "$here/kueue/build.sh"
fi

# Check them in parallel: each is a large static binary, serially this is ~0.5 s.
missing=()
declare -A pids=()
for b in "${binaries[@]}"; do
	works "$b" &
	pids[$b]=$!
done
for b in "${binaries[@]}"; do
	if [ "${K8S_BUILD_FORCE:-0}" = 1 ] || ! wait "${pids[$b]}"; then
		missing+=("$b")
	fi
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "reusing cluster binaries in $bin (Kubernetes $K8S_VERSION, kwok $KWOK_VERSION, CoreDNS $COREDNS_VERSION)"
	exit 0
fi

require_go "the local cluster (Kubernetes $K8S_VERSION)" "$GO_MIN"
go_build_env "$cache" -mod=mod
mkdir -p "$bin"

stage=$(mktemp -d "$cache/k8s/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT

echo "building ${#missing[@]} missing binaries (${missing[*]}) from the Go module proxy;" \
	"a cold build of all nine takes 15-40 min on 2 cores, progress below"
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

n=${#missing[@]}
i=0
# build_one NAME COMMAND...: run the build command, which writes $stage/NAME, and move
# the binary into place at once, so an interrupted run keeps what it finished.
build_one() {
	local name=$1 t0
	shift
	i=$((i + 1))
	echo "building $name ($i/$n)..."
	t0=$(date +%s)
	# A shell function (go_install) cannot run under nice: it renices its own go command.
	declare -F "$1" >/dev/null || set -- nice -n 5 "$@"
	if ! "$@"; then
		echo "error: building $name failed (command: $*)" >&2
		exit 1
	fi
	echo "  $name built in $(($(date +%s) - t0)) s ($(du -m "$stage/$name" | cut -f1) MiB)"
	mv -f "$stage/$name" "$bin/$name"
}

# go_install NAME MODULE@VERSION LDFLAGS: a main package outside the wrapper module
# (its own go.mod and go.sum), installed into the stage dir under NAME.
go_install() {
	local name=$1 target=$2 ldflags=$3 built
	(cd "$stage" && GOFLAGS= GOBIN="$stage/gobin-$name" nice -n 5 "$GO" install -trimpath -ldflags "$ldflags" "$target")
	built=$(find "$stage/gobin-$name" -type f | head -n1)
	mv "$built" "$stage/$name"
}

for b in "${missing[@]}"; do
	case "$b" in
	etcd) build_one etcd "$GO" build -trimpath -ldflags "-s -w" -o "$stage/etcd" go.etcd.io/etcd/server/v3 ;;
	kwok)
		# kwok is installed outside the wrapper module: its k8s.io/* requirements differ
		# from the replace block there. v0.8.0 dropped the built-in stages, so pin v0.7.0.
		build_one kwok go_install kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" \
			"-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
		;;
	coredns)
		build_one coredns go_install coredns "github.com/coredns/coredns@$COREDNS_VERSION" "-s -w"
		;;
	*) build_one "$b" "$GO" build -trimpath -ldflags "$ldflags_k8s" -o "$stage/$b" "k8s.io/kubernetes/cmd/$b" ;;
	esac
done
echo "cluster binaries ready in $bin ($(($(date +%s) - total_start)) s)"
