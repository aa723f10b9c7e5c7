#!/usr/bin/env bash
# Norma's include graph, from the sources: which folder includes which, and
# whether any include points up or closes a cycle (STYLE.md §10).
#   scripts/deps.sh           the folder table and picture, as Markdown for docs/architecture.md
#   scripts/deps.sh --check   exit 1, naming each include, when one points up or a cycle exists
# Units are files without their extension (batchnorm2d.h and .cpp are one unit).
# Allowed: core/ includes core/ only; layers/, optim/, data/ include core/ and
# their own folder; apps/ may include them all. core/dist/ is core.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# "from to ext" for every #include "..." or <norma/...> that names a repository file:
# the including unit, the included one, and the including file's extension.
edges() {
  find core layers optim data apps -name '*.h' -o -name '*.cpp' | sort | while read -r f; do
    dir=$(dirname "$f")
    sed -n -E 's@^[[:space:]]*#[[:space:]]*include[[:space:]]*("([^"]+)"|<norma/([^>]+)>).*@\2\3@p' "$f" |
      while read -r inc; do
        if [[ -f "$dir/$inc" ]]; then to=$(realpath -m --relative-to=. "$dir/$inc")
        elif [[ -f "$inc" ]]; then to=$inc
        else continue; fi
        echo "${f%.*} ${to%.*} ${f##*.}"
      done
  done | awk '$1 != $2' | sort -u
}

# The folder of a unit: core, layers, optim, data or apps.
folder_awk='function folder(u) { split(u, p, "/"); return p[1] }'

all=$(edges)
if [[ ${1:-} == --check ]]; then
  bad=0
  # Upward includes: core/ includes core/ only; layers/, optim/, data/ core/ and themselves.
  up=$(awk "$folder_awk"'
    { a = folder($1); b = folder($2)
      ok = a == b || a == "apps" || (b == "core" && (a == "layers" || a == "optim" || a == "data"))
      if (!ok) printf "deps: %s includes %s (%s/ may not include %s/)\n", $1, $2, a, b }' <<< "$all")
  [[ -n $up ]] && echo "$up" && bad=1
  # Cycles: between headers anywhere, and between units above core/ (core's tensor, ops and
  # autograd call each other from their .cpp files by design: they are one component).
  headers=$(awk '$3 == "h" { print $1, $2 }' <<< "$all")
  above=$(awk "$folder_awk"'folder($1) != "core" && folder($2) != "core" { print $1, $2 }' <<< "$all")
  for g in "$headers" "$above"; do
    out=$(tsort <<< "$g" 2>&1 >/dev/null || true)
    if [[ -n $out ]]; then
      echo "deps: include cycle through: $(grep -v 'input contains a loop' <<< "$out" | sed 's/^tsort: //' | tr '\n' ' ')"
      bad=1
    fi
  done
  [[ $bad == 0 ]] && echo "deps: $(awk '{ print $1, $2 }' <<< "$all" | sort -u | wc -l) includes between units, none upward, no cycle"
  exit $bad
fi

echo "| folder | includes files of |"
echo "|---|---|"
awk "$folder_awk"'
  !seen[$1 " " $2]++ { n[folder($1) " " folder($2)]++ }
  END { split("core layers optim data apps", f, " ")
        for (i = 1; i <= 5; ++i) { row = ""
          for (j = 1; j <= 5; ++j) { k = f[i] " " f[j]; if (k in n) row = row (row == "" ? "" : ", ") f[j] "/" }
          printf "| %s/ | %s |\n", f[i], row == "" ? "nothing" : row } }' <<< "$all"
