#!/usr/bin/env bash
# Builds (or reuses) the chart tools from the Go module proxy, the way
# hack/k8s/build.sh builds the control plane:
#   helm            helm.sh/helm/v4 (lint, template, install)
#   untt            helm-unittest, laid out as a helm plugin too (`helm unittest`)
#   kubeconform     validates rendered manifests against Kubernetes JSON schemas
# and writes kubeconform's schemas for the Kubernetes version of the local control
# plane from that release's OpenAPI document (k8s.io/kubernetes's
# api/openapi-spec/swagger.json, a file of the Go module), so no schema is fetched
# at test time.
#
# Binaries go to $TRAINWRIGHT_CACHE/tools/bin, the plugin to
# $TRAINWRIGHT_CACHE/tools/helm-plugins, the schemas to
# $TRAINWRIGHT_CACHE/tools/schemas/<k8s version>; the Go caches are shared with
# hack/k8s/build.sh under $TRAINWRIGHT_CACHE/go. A second run with everything
# present prints "reusing ..." and exits.
#
# It also copies the Prometheus Operator's CRDs (ServiceMonitor, PodMonitor,
# PrometheusRule) out of its Go module into $TRAINWRIGHT_CACHE/tools/crds/, for the e2e
# test that has the API server validate the chart's monitoring objects.
#
# Environment: TRAINWRIGHT_CACHE (default ~/.cache/trainwright), GO (default: go
# on PATH), TOOLS_BUILD_FORCE=1 to rebuild even if the binaries exist.
set -euo pipefail

HELM_VERSION=v4.3.2
KUBECONFORM_VERSION=v0.8.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0
GO_MIN=1.26

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib/go.sh
. "$here/../lib/go.sh"
# One home for the Kubernetes version: the control plane's build script.
K8S_VERSION=$(sed -n 's/^K8S_VERSION=//p' "$here/../k8s/build.sh")
# helm-unittest is pinned in hack/tools/gomod/go.mod (it is built there, see below).
UNITTEST_VERSION=$(sed -n 's/^\t*github.com\/helm-unittest\/helm-unittest \(v[^ ]*\).*/\1/p' "$here/gomod/go.mod")
cache=${TRAINWRIGHT_CACHE:-$HOME/.cache/trainwright}
tools=$cache/tools
bin=$tools/bin
plugin=$tools/helm-plugins/helm-unittest
schemas=$tools/schemas/$K8S_VERSION

present() {
	[ -x "$bin/helm" ] && [ -x "$bin/untt" ] && [ -x "$bin/kubeconform" ] || return 1
	[ -x "$plugin/untt-linux-amd64" ] || [ -x "$plugin/untt-linux-arm64" ] || return 1
	[ -s "$schemas/deployment-apps-v1.json" ] || return 1
	"$bin/helm" version --short 2>/dev/null | grep -q "^$HELM_VERSION" || return 1
	[ "$("$bin/kubeconform" -v 2>/dev/null)" = "$KUBECONFORM_VERSION" ] || return 1
	"$bin/untt" --help >/dev/null 2>&1
}

# The Prometheus Operator's CRDs: a download, independent of the builds below.
monitoring_crds=$tools/crds/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION
if [ ! -s "$monitoring_crds/monitoring.coreos.com_servicemonitors.yaml" ]; then
	echo "downloading the Prometheus Operator $PROMETHEUS_OPERATOR_VERSION module for its CRDs..."
	module_dir=$(cd /tmp && GOMODCACHE=$cache/go/mod GOFLAGS=-mod=mod GOSUMDB=${GOSUMDB:-off} \
		GOTOOLCHAIN=local "${GO:-go}" mod download -json \
		"github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -n "$module_dir" ] || { echo "error: could not download the Prometheus Operator module" >&2; exit 1; }
	mkdir -p "$monitoring_crds"
	for kind in servicemonitors podmonitors prometheusrules; do
		cp "$module_dir/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$monitoring_crds/"
	done
	chmod -R u+w "$monitoring_crds"
	echo "  Prometheus Operator CRDs in $monitoring_crds"
fi

if [ "${TOOLS_BUILD_FORCE:-0}" != 1 ] && present; then
	echo "reusing chart tools in $bin (helm $HELM_VERSION, helm-unittest $UNITTEST_VERSION," \
		"kubeconform $KUBECONFORM_VERSION, schemas for Kubernetes $K8S_VERSION)"
	exit 0
fi

require_go "helm $HELM_VERSION, helm-unittest and kubeconform" "$GO_MIN"
go_build_env "$cache"
mkdir -p "$bin" "$tools"

stage=$(mktemp -d "$tools/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
total_start=$(date +%s)

n=4
i=0
install_one() {
	local name=$1 pkg=$2 ldflags=$3 out=$4 t0
	i=$((i + 1))
	echo "building $name ($i/$n)..."
	t0=$(date +%s)
	(cd "$stage" && GOBIN="$stage" nice -n 5 "$GO" install -trimpath -ldflags "$ldflags" "$pkg")
	[ "$(basename "$pkg" | cut -d@ -f1)" = "$out" ] || mv "$stage/$(basename "$pkg" | cut -d@ -f1)" "$stage/$out"
	echo "  $name built in $(($(date +%s) - t0)) s ($(du -m "$stage/$out" | cut -f1) MiB)"
}

install_one helm "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" \
	"-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.metadata= -X helm.sh/helm/v4/internal/version.gitTreeState=clean" helm
# helm-unittest's go.mod replaces a module, which `go install pkg@version` refuses:
# build it inside hack/tools/gomod, which requires it and repeats the replacement.
i=$((i + 1))
echo "building helm-unittest ($i/$n)..."
t0=$(date +%s)
(cd "$here/gomod" && GOFLAGS=-mod=mod nice -n 5 "$GO" build -trimpath -ldflags "-s -w" \
	-o "$stage/untt" github.com/helm-unittest/helm-unittest/cmd/helm-unittest)
echo "  helm-unittest built in $(($(date +%s) - t0)) s ($(du -m "$stage/untt" | cut -f1) MiB)"
install_one kubeconform "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" \
	"-s -w -X main.version=$KUBECONFORM_VERSION" kubeconform

i=$((i + 1))
echo "writing kubeconform schemas for Kubernetes $K8S_VERSION ($i/$n)..."
k8s_dir=$(cd "$stage" && "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
rm -rf "$stage/schemas"
python3 "$here/k8s_schemas.py" "$k8s_dir/api/openapi-spec/swagger.json" "$stage/schemas"
echo "  $(ls "$stage/schemas" | wc -l) schemas"

# helm-unittest as a helm plugin: its plugin.yaml runs $HELM_PLUGIN_DIR/untt-<os>-<arch>.
unittest_dir=$(cd "$here/gomod" && GOFLAGS=-mod=mod "$GO" list -m -f '{{.Dir}}' \
	github.com/helm-unittest/helm-unittest)
arch=$("$GO" env GOARCH)
rm -rf "$plugin" "$schemas"
mkdir -p "$plugin" "$(dirname "$schemas")"
sed '/^platformHooks:/,$d' "$unittest_dir/plugin.yaml" >"$plugin/plugin.yaml"
cp "$stage/untt" "$plugin/untt-linux-$arch"
mv "$stage/schemas" "$schemas"
for b in helm untt kubeconform; do
	mv -f "$stage/$b" "$bin/$b"
done
echo "chart tools ready in $bin ($(($(date +%s) - total_start)) s)"
