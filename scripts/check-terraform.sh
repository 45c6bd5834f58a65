#!/usr/bin/env bash
# `terraform fmt -check` for infra/terraform. Without a terraform binary (none is packaged for these
# machines), the same formatter (HCL's hclwrite, which terraform fmt uses) is built from Debian's
# golang-github-hashicorp-hcl-v2-dev as `hclfmt`.
set -euo pipefail
cd "$(dirname "$0")/.."
files=(infra/terraform/*.tf)
if command -v terraform >/dev/null 2>&1; then
  exec terraform fmt -check -diff infra/terraform
fi
hclfmt="${HCLFMT:-.venv/bin/hclfmt}"
if [ ! -x "$hclfmt" ]; then
  src=/usr/share/gocode/src/github.com/hashicorp/hcl/v2/cmd/hclfmt
  if [ ! -d "$src" ] || ! command -v go >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq && apt-get install -y -qq golang-go golang-github-hashicorp-hcl-v2-dev >/dev/null
    else
      echo "check-terraform: no terraform, and cannot install Debian's golang-github-hashicorp-hcl-v2-dev" >&2
      [ "${CI:-}" = true ] && exit 1 || exit 0
    fi
  fi
  GOPATH=/usr/share/gocode GO111MODULE=off GOCACHE="${TMPDIR:-/tmp}/mlc-farm-gocache" \
    go build -o "$hclfmt" github.com/hashicorp/hcl/v2/cmd/hclfmt
fi
status=0
for f in "${files[@]}"; do
  if ! "$hclfmt" "$f" | diff -u "$f" - ; then
    echo "check-terraform: $f is not formatted (terraform fmt $f)" >&2
    status=1
  fi
done
[ "$status" = 0 ] && echo "terraform files are formatted (${#files[@]} files)"
exit "$status"
