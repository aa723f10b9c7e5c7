#!/usr/bin/env bash
# Line count per folder (STYLE.md §16), as a Markdown table for docs/architecture.md.
# Counts source and text files (.h .cpp .py .sh .cmake .md, CMakeLists.txt);
# test fixtures and other data are left out.   Usage: scripts/loc.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "| folder | files | lines |"
echo "|---|--:|--:|"
total_files=0 total_lines=0
for dir in core layers optim data apps tests docs scripts bench; do
  files=0 lines=0
  if [[ -d $dir ]]; then
    while IFS= read -r -d '' f; do
      files=$((files + 1))
      lines=$((lines + $(wc -l < "$f")))
    done < <(find "$dir" -type f \( -name '*.h' -o -name '*.cpp' -o -name '*.py' -o -name '*.sh' \
                -o -name '*.cmake' -o -name '*.md' -o -name 'CMakeLists.txt' \) -print0)
  fi
  echo "| $dir/ | $files | $lines |"
  total_files=$((total_files + files)) total_lines=$((total_lines + lines))
done
echo "| total | $total_files | $total_lines |"
