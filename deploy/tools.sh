#!/usr/bin/env bash
# Offline tooling for the Kubernetes manifests, built once per machine into a cache keyed by
# version and reused by every clone (`make deploy-tools`, tests/deploy/test_manifests.py):
#
#   deploy/tools.sh kustomize   build kustomize from source (Go module proxy); print its path
#   deploy/tools.sh crds        fetch the CRDs the manifests use; print the folder holding them
#   deploy/tools.sh all         both
#
# Sources, all from package registries (no cluster, no GitHub):
#   kustomize                    sigs.k8s.io/kustomize/kustomize/v5 (Go module proxy)
#   ScaledObject, TriggerAuth.   github.com/kedacore/keda/v2, config/crd/bases (Go module proxy)
#   ServiceMonitor               github.com/prometheus-operator/prometheus-operator,
#                                example/prometheus-operator-crd (Go module proxy)
#   KafkaTopic, KafkaUser        io.strimzi:api:<version>:jar:tests, crds/v1beta2 (Maven Central)
# Kubernetes' own schemas come from the Python package kubernetes-validate (a dev dependency).
#
# Cache: $LENSNET_TOOLS_DIR, default ${XDG_CACHE_HOME:-~/.cache}/lensnet-tools.
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.1 # builds with Go >= 1.24 (v5.8.2 needs Go 1.26, v5.8.3 Go 1.27)
KEDA_VERSION=v2.21.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0
STRIMZI_VERSION=0.49.0

cache="${LENSNET_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lensnet-tools}"

die() { echo "deploy/tools.sh: $*" >&2; exit 1; }

tmp=""
trap 'rm -rf "$tmp"' EXIT

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }

kustomize() {
  local dir="$cache/kustomize-$KUSTOMIZE_VERSION"
  if [[ ! -x "$dir/kustomize" ]]; then
    need go "install Go >= 1.24 to build kustomize from source."
    tmp="$(mktemp -d "$cache/.kustomize.XXXXXX")"
    # Outside any module, so go.mod files around the caller play no part; the local toolchain
    # only (a download of another toolchain is not needed for this version).
    (cd "$tmp" && GOTOOLCHAIN=local GOFLAGS=-buildvcs=false GOBIN="$tmp/bin" \
      go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION") >&2
    rm -rf "$dir" && mv "$tmp/bin" "$dir" && rm -rf "$tmp"
  fi
  echo "$dir/kustomize"
}

# Folder of a Go module from the module proxy (downloaded into GOMODCACHE once).
go_module_dir() {
  local json
  json="$(cd "$1" && GOTOOLCHAIN=local go mod download -json "$2")" ||
    die "go mod download $2 failed: $json"
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json"
}

crds() {
  local dir="$cache/crds-keda-$KEDA_VERSION"
  dir+=".prometheus-operator-$PROMETHEUS_OPERATOR_VERSION.strimzi-$STRIMZI_VERSION"
  if [[ ! -f "$dir/.complete" ]]; then
    need go "install Go to fetch the KEDA and prometheus-operator CRDs."
    need mvn "install Apache Maven (Debian: apt-get install maven) to fetch the Strimzi CRDs."
    need unzip "install unzip (Debian: apt-get install unzip)."
    local keda prom
    tmp="$(mktemp -d "$cache/.crds.XXXXXX")"
    keda="$(go_module_dir "$tmp" "github.com/kedacore/keda/v2@$KEDA_VERSION")"
    prom="$(go_module_dir "$tmp" \
      "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")"
    [[ -d "$keda" && -d "$prom" ]] || die "go mod download gave no module folder"
    mkdir -p "$tmp/out"
    cp "$keda/config/crd/bases/keda.sh_scaledobjects.yaml" \
      "$keda/config/crd/bases/keda.sh_triggerauthentications.yaml" \
      "$prom/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" \
      "$tmp/out/"
    mvn -q -B dependency:copy -Dartifact="io.strimzi:api:$STRIMZI_VERSION:jar:tests" \
      -DoutputDirectory="$tmp/jar" >&2
    unzip -p "$tmp/jar/api-$STRIMZI_VERSION-tests.jar" crds/v1beta2/043-Crd-kafkatopic.yaml \
      >"$tmp/out/kafka.strimzi.io_kafkatopics.yaml"
    unzip -p "$tmp/jar/api-$STRIMZI_VERSION-tests.jar" crds/v1beta2/044-Crd-kafkauser.yaml \
      >"$tmp/out/kafka.strimzi.io_kafkausers.yaml"
    chmod -R u+w "$tmp/out" # files copied from GOMODCACHE are read-only
    touch "$tmp/out/.complete"
    rm -rf "$dir" && mv "$tmp/out" "$dir" && rm -rf "$tmp"
  fi
  echo "$dir"
}

mkdir -p "$cache"
case "${1:-}" in
  kustomize) kustomize ;;
  crds) crds ;;
  all) kustomize && crds ;;
  *) die "usage: deploy/tools.sh kustomize|crds|all" ;;
esac
