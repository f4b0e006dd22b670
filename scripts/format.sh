#!/usr/bin/env bash
# Formats the project's C++ sources with .clang-format (Debian's clang-format-14), or with --check lists the files
# that do not follow it and fails. scripts/test.sh (and so CI) runs the check.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
FORMAT="${CLANG_FORMAT:-clang-format-14}"
mapfile -t files < <(git ls-files '*.cc' '*.h')
if [ "${1:-}" = "--check" ]; then
  bad=()
  for f in "${files[@]}"; do
    if ! "${FORMAT}" --style=file "$f" | cmp -s - "$f"; then bad+=("$f"); fi
  done
  if [ "${#bad[@]}" -gt 0 ]; then
    echo "format.sh: ${#bad[@]} files do not follow .clang-format (run bash scripts/format.sh): ${bad[*]}" >&2
    exit 1
  fi
  echo "format.sh: ${#files[@]} files follow .clang-format"
else
  "${FORMAT}" --style=file -i "${files[@]}"
fi
