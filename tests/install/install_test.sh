#!/bin/bash
# install_test.sh BUILD_DIR SOURCE_DIR: installs the build into a temporary prefix, builds the
# README's own-program example against it out of tree (cmake + ninja, find_package(cohort)),
# runs it under the installed `cohort launch --nproc-per-node 2`, and checks what it printed
# and the metrics it wrote. Every failure is one line naming what is wrong.
set -uo pipefail
build=$(realpath "$1")
src=$(realpath "$2")
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/cohort-install-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
fail() { echo "FAIL: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 ||
  fail "cmake --install failed (build every target first: cmake --build build): $(tail -1 "$work/install.log")"
for f in bin/cohort include/runtime/trainer.h include/collectives/communicator.h \
         include/collectives/config.h include/collectives/store/store.pb.h \
         include/checkpoint/checkpointer.h include/common/error.h lib/libcohort_runtime.a \
         lib/libcohort_collectives.a lib/cmake/cohort/cohortConfig.cmake \
         lib/cmake/cohort/cohortTargets.cmake; do
  [[ -e $prefix/$f ]] || fail "the install has no $f"
done
[[ -z $(find "$prefix/include" -name '*.cc') ]] || fail "sources were installed under include/"

app=$work/app
mkdir -p "$app"
python3 "$here/readme_example.py" "$src/README.md" "$app" || fail "no example in README"
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -G Ninja -S "$app" -B "$app/build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
  "${launcher[@]}" >"$work/configure.log" 2>&1 ||
  { cat "$work/configure.log"; fail "configuring the README's example against $prefix failed"; }
cmake --build "$app/build" >"$work/build.log" 2>&1 ||
  { cat "$work/build.log"; fail "building the README's example against $prefix failed"; }
# Out of tree means out of tree: nothing of the source or build tree is on its command lines.
if grep -q -e "$src/" -e "$build/" "$app/build/build.ninja"; then
  fail "the example's build uses the cohort tree: $(grep -o -m1 -e "$src/[^ ]*" -e "$build/[^ ]*" "$app/build/build.ninja")"
fi

run=$work/run
mkdir -p "$run"
cd "$run" || exit 1
OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 COHORT_PROGRESS=plain \
  "$prefix/bin/cohort" launch --nproc-per-node 2 -- "$app/build/train" >"$work/run.log" 2>&1
rc=$?
cat "$work/run.log"
[[ $rc == 0 ]] || fail "cohort launch --nproc-per-node 2 -- train exited with $rc"
grep -q "started 2 workers" "$work/run.log" || fail "the launcher did not start 2 workers"
grep -q "\[rank 0\] epoch 3/3" "$work/run.log" || fail "rank 0 printed no progress line for epoch 3/3"
for r in 0 1; do
  grep -q "rank $r (node 0)" "$work/run.log" || fail "the per-rank table has no rank $r"
done
[[ -s metrics.jsonl ]] || fail "the example wrote no metrics.jsonl in its working directory"
python3 - metrics.jsonl <<'PY' || fail "metrics.jsonl does not show the model learning"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
losses = [r["loss"] for r in rows if "loss" in r]
steps = [r["step"] for r in rows if "step" in r]
# 8192 examples / (2 ranks x 64) = 64 steps an epoch, 3 epochs.
assert max(steps) == 192, f"last step {max(steps)}, expected 192"
assert losses[0] > 0.5 and losses[-1] < 0.25, f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"
print(f"metrics: {len(rows)} rows, step {max(steps)}, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
PY

# cohort::collectives alone (no libtorch TU): a 2-rank all-reduce under the installed launcher.
coll=$work/collectives
cmake -G Ninja -S "$here/collectives_app" -B "$coll" -DCMAKE_PREFIX_PATH="$prefix" \
  "${launcher[@]}" >"$work/coll-configure.log" 2>&1 ||
  { cat "$work/coll-configure.log"; fail "configuring a cohort::collectives program failed"; }
cmake --build "$coll" >"$work/coll-build.log" 2>&1 ||
  { cat "$work/coll-build.log"; fail "building a cohort::collectives program failed"; }
if ninja -C "$coll" -t commands allreduce | grep -q -e "libtorch" -e "/torch/"; then
  fail "a cohort::collectives program links or includes libtorch"
fi
"$prefix/bin/cohort" launch --nproc-per-node 2 -- "$coll/allreduce" >"$work/coll.log" 2>&1 ||
  { cat "$work/coll.log"; fail "the cohort::collectives program failed under cohort launch"; }
for r in 0 1; do
  grep -q "rank $r of 2: 3 20" "$work/coll.log" || { cat "$work/coll.log"; fail "rank $r's sums are wrong"; }
done
echo "PASS: installed to $prefix, built the README's example and a cohort::collectives program out of tree, ran both at world 2"
