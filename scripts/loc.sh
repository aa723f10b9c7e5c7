#!/usr/bin/env bash
# Line count per folder (STYLE.md §18), and the spine's and the wing's size in
# code lines, as Markdown tables for docs/architecture.md.
# Counts source and text files (.h .cpp .py .sh .cmake .md, CMakeLists.txt);
# test fixtures and other data are left out.
#   scripts/loc.sh           both tables
#   scripts/loc.sh --parts   the spine / wing table alone
#   scripts/loc.sh --check   exit 1 when the spine is over 6,500 code lines or a spine file
#                            over 400 lines (a ctest test)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
parts_only=0
[[ ${1:-} == --parts || ${1:-} == --check ]] && parts_only=1

if ((!parts_only)); then

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
echo
fi

# The spine: what builds with -DNORMA_FAST_KERNELS=OFF, MPI left out (core,
# layers, optim, data without layers/fast/ and core/dist/mpi_process_group.*),
# in code lines (neither blank nor only a comment), and its longest file in
# lines; core/dist/ (process groups, SyncBatchNorm's collectives, gradient
# averaging) is in it and also counted apart. The wing: layers/fast/.
# Limits (issue 26): spine <= 6,500 code lines, no spine file over 400 lines.
code_lines() { grep -cvE '^[[:space:]]*(//.*)?$' "$@" | awk -F: '{ s += $NF } END { print s + 0 }'; }
mapfile -t spine < <(find core layers optim data \( -name '*.h' -o -name '*.cpp' \) \
                       -not -path 'layers/fast/*' -not -name 'mpi_process_group.*' | sort)
mapfile -t wing < <(find layers/fast \( -name '*.h' -o -name '*.cpp' \) 2>/dev/null | sort)
mapfile -t dist < <(find core/dist \( -name '*.h' -o -name '*.cpp' \) -not -name 'mpi_process_group.*' | sort)
longest=$(wc -l "${spine[@]}" | grep -v ' total$' | sort -n | tail -n 1)
echo "| part | files | code lines |"
echo "|---|--:|--:|"
echo "| spine (core, layers, optim, data; not layers/fast/, not MPI) | ${#spine[@]} | $(code_lines "${spine[@]}") |"
echo "| of which the data-parallel component (core/dist/, not MPI) | ${#dist[@]} | $(code_lines "${dist[@]}") |"
echo "| wing (layers/fast/) | ${#wing[@]} | $(code_lines "${wing[@]}") |"
echo
echo "Longest spine file: $(awk '{ print $2 }' <<< "$longest"), $(awk '{ print $1 }' <<< "$longest") lines."

if [[ ${1:-} == --check ]]; then
  spine_lines=$(code_lines "${spine[@]}") longest_lines=$(awk '{ print $1 }' <<< "$longest")
  if ((longest_lines > 400)); then
    echo "loc: no spine file may be over 400 lines; the longest has $longest_lines (docs/architecture.md, 'Sizes')"
    exit 1
  fi
  if ((spine_lines > 6500)); then
    echo "loc: the spine has $spine_lines code lines, over its 6,500 (docs/architecture.md, 'Sizes')"
    exit 1
  fi
fi
