#!/usr/bin/env bash
# tests/tool_help_test.sh BINARY FLAG...: `BINARY --help` must list every FLAG (as --FLAG) and must not say "No flags
# matched" (what absl prints when --help finds none of the tool's own flags). absl exits 1 after --help: any exit
# status but a crash (128+) is fine.
set -uo pipefail
binary="$1"
shift
help="$("${binary}" --help 2>&1)"
status=$?
failed=0
if [[ ${status} -ge 128 ]]; then
  echo "FAIL: ${binary} --help died with status ${status}"
  failed=1
fi
if grep -q "No flags matched" <<<"${help}"; then
  echo "FAIL: ${binary} --help says \"No flags matched\""
  failed=1
fi
for flag in "$@"; do
  if ! grep -q -- "--${flag}\b" <<<"${help}"; then
    echo "FAIL: ${binary} --help does not list --${flag}"
    failed=1
  fi
done
if [[ ${failed} -ne 0 ]]; then
  echo "--- ${binary} --help printed:"
  echo "${help}"
  exit 1
fi
echo "ok: ${binary} --help lists $*"
