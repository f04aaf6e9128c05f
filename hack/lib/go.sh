# shellcheck shell=bash
# What the scripts that build Go programs from the module proxy share (hack/k8s/build.sh,
# hack/k8s/kueue/build.sh, hack/tools/build.sh). Source it; it defines functions only.

# require_go WHAT MIN: GO (default: go on PATH) is a Go toolchain of at least MIN, or the
# script exits 1 with one sentence saying what it was building.
require_go() {
	local what=$1 min=$2 version
	GO=${GO:-go}
	if ! command -v "$GO" >/dev/null 2>&1; then
		echo "error: the Go toolchain ('$GO') is not on PATH; install Go >= $min" \
			"(https://go.dev/dl/) to build $what." >&2
		exit 1
	fi
	version=$("$GO" env GOVERSION 2>/dev/null || true)
	version=${version#go}
	if [ -z "$version" ] || [ "$(printf '%s\n%s\n' "$min" "$version" | sort -V | head -n1)" != "$min" ]; then
		echo "error: Go ${version:-unknown} is too old; $what needs Go >= $min (https://go.dev/dl/)." >&2
		exit 1
	fi
}

# go_build_env CACHE [GOFLAGS]: module and build caches under CACHE/go (so CI and later
# clones reuse them), the machine's own Go (no toolchain download), static pure-Go binaries.
# sum.golang.org is not always reachable: module zips carry their go.sum (and
# hack/k8s/gomod/go.sum pins the Kubernetes binaries' modules), so GOSUMDB defaults to off.
go_build_env() {
	export GOMODCACHE=$1/go/mod
	export GOCACHE=$1/go/build
	export GOTOOLCHAIN=local
	export CGO_ENABLED=0
	export GOSUMDB=${GOSUMDB:-off}
	export GOFLAGS=${2:-}
	mkdir -p "$GOMODCACHE" "$GOCACHE"
}
