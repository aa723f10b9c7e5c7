#!/bin/sh
# Fails if code outside the AVX2 and AVX-512 copies of the fast kernels uses
# instructions a baseline x86-64 CPU lacks: the rest of Norma must run anywhere.
# The trap it guards against: an inline function or template instantiated in a
# per-ISA file (layers/fast/isa.h) is emitted there with that file's flags,
# under the same name as everywhere else, and the linker keeps any one copy.
# So every function whose name does not mention fast::avx2:: or fast::avx512::
# must be free of ymm/zmm/mask registers, VEX/EVEX-encoded instructions (AVX's
# v-prefixed ones, FMA, F16C) and BMI1/BMI2/LZCNT/MOVBE ones.
# Usage: scripts/check_isa.sh FILE... (objects, archives or executables).
# Exit 0: clean; 1: offenders listed; 77: skipped, objdump missing.
if ! command -v objdump >/dev/null 2>&1; then
  echo "check_isa.sh: skipped: objdump (binutils) is not installed"
  exit 77
fi
status=0
for f in "$@"; do
  objdump -d --no-show-raw-insn -C "$f" | awk -v file="$f" '
    /^[0-9a-f]+ <.*>:$/ { fn = substr($0, index($0, "<") + 1); sub(/>:$/, "", fn); next }
    /^ *[0-9a-f]+:\t/ {
      if (fn ~ /fast::avx(2|512)::/) next
      insn = substr($0, index($0, "\t") + 1); split(insn, w, " "); op = w[1]
      if (insn ~ /%[yz]mm[0-9]|%k[0-7]/ || (op ~ /^v/ && op !~ /^ver[rw]$/) ||
          op ~ /^(andn|bextr|blsi|blsmsk|blsr|bzhi|mulx|pdep|pext|rorx|sarx|shlx|shrx|lzcnt|movbe)$/) {
        if (!(fn in seen)) { seen[fn] = 1; printf "%s: %s: %s\n", file, fn, insn; bad = 1 }
      }
    }
    END { exit bad }' || status=1
done
if [ $status -ne 0 ]; then
  echo "check_isa.sh: the functions above use instructions beyond baseline x86-64 outside the AVX2/AVX-512 copies"
fi
exit $status
