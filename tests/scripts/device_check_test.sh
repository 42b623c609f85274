#!/usr/bin/env bash
# Tests of scripts/device-check that run on any machine (issue 16): --dry-run prints a plan that
# names every measurement; without a GPU the check skips with one line and exits 0; the table
# (bench/gpu/device_summary.py) reads the measurements' JSON and names each one.
#   device_check_test.sh REPO_ROOT
set -euo pipefail
ROOT=${1:?usage: device_check_test.sh REPO_ROOT}
fail() { echo "FAIL: $*" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. The plan names every step and measurement, in both modes, and touches nothing.
for mode in "" --quick; do
  out=$(DEVICE_CHECK_DIR=$tmp/work "$ROOT/scripts/device-check" --dry-run $mode)
  for want in "ctest -L gpu" "NCCL all-reduce busbw at one rank" "DDP step at world 1" \
    "pinned-memory checkpoint staging GB/s" "Fashion-MNIST CNN step time" "PyTorch" "ratio" \
    "-DCOHORT_WITH_MPI=OFF" "dpkg -x" "COHORT_NCCL_INCLUDE_DIR" "Torch_DIR" "nccl_test" \
    "cnn_step_worker"; do
    grep -qF -- "$want" <<<"$out" || fail "--dry-run $mode does not mention '$want':"$'\n'"$out"
  done
done
[[ ! -e $tmp/work ]] || fail "--dry-run created $tmp/work"

# 2. Without a GPU: one line saying what was skipped and why, exit 0, nothing built.
gpu=0
if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then gpu=1; fi
compgen -G '/dev/nvidia[0-9]*' >/dev/null && gpu=1
if ((gpu == 0)); then
  out=$(DEVICE_CHECK_DIR=$tmp/work "$ROOT/scripts/device-check" 2>&1) || fail "exit $? without a GPU: $out"
  [[ $(wc -l <<<"$out") -eq 1 ]] || fail "more than one line without a GPU:"$'\n'"$out"
  grep -q "skipped" <<<"$out" && grep -q "no GPU" <<<"$out" || fail "does not say what and why: $out"
  [[ ! -e $tmp/work ]] || fail "created $tmp/work without a GPU"
else
  echo "a GPU is here: the no-GPU path is not tested"
fi

# 3. Unknown options are refused.
if "$ROOT/scripts/device-check" --bogus >/dev/null 2>&1; then fail "--bogus accepted"; fi

# 4. The table from a run's files: every measurement named with its number, failures shown.
mkdir -p "$tmp/json"
printf 'preflight\tok\t1\t\nbuild\tok\t200\t\ngpu-tests\tFAILED\t30\texit 8; 93%% tests passed\n' >"$tmp/steps.tsv"
cat >"$tmp/json/nccl.json" <<'J'
{"device": "NVIDIA H200", "rows": [{"bytes": 8, "time_us": 9.5, "algbw_gbs": 0.001, "busbw_gbs": 0},
 {"bytes": 268435456, "time_us": 120.0, "algbw_gbs": 2236.9, "busbw_gbs": 0}]}
J
echo '{"bytes": 1073741824, "to_cpu_then_pool_gbs": 3.1, "pool_pageable_gbs": 8.2, "pool_pinned_gbs": 50.5, "cuda_host_alloc_gbs": 52.0}' >"$tmp/json/staging.json"
echo '{"side": "cohort", "ddp": true, "device": "cuda:0", "backend": "nccl", "median_step_ms": 1.5, "min_step_ms": 1.2, "first_loss": 2.3, "last_loss": 0.1, "ok": true}' >"$tmp/json/ddp-step.json"
for r in 1 2; do
  echo '{"median_step_ms": 1.0}' >"$tmp/json/cohort-ddp-$r.json"
  echo '{"median_step_ms": 2.0, "torch": "2.11.0+cu130"}' >"$tmp/json/torch-ddp-$r.json"
  echo '{"median_step_ms": 0.8}' >"$tmp/json/cohort-plain-$r.json"
  echo '{"median_step_ms": 1.6, "torch": "2.11.0+cu130"}' >"$tmp/json/torch-plain-$r.json"
done
table=$(python3 "$ROOT/bench/gpu/device_summary.py" "$tmp/steps.tsv" "$tmp/json" "$tmp/results.json" 231)
for want in "2 of 3 steps ok, 231 s" "gpu-tests     FAILED" "93% tests passed" \
  "NCCL all-reduce, 1 rank, 256 MiB f32" "algbw 2236.9 GB/s" "CUDA-tensor DDP step, world 1 (nccl, cuda:0)" \
  "OK: 1.500 ms/step" "pinned pool buffer" "50.5 GB/s" "8.2 / 3.1 / 52.0 GB/s" \
  "PyTorch 2.11.0+cu130 2.000 ms: cohort/PyTorch 0.50x (2 rounds)" "plain (no DDP)"; do
  grep -qF -- "$want" <<<"$table" || fail "the table lacks '$want':"$'\n'"$table"
done
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["cnn"]["ddp"]["ratio_cohort_over_torch"] == 0.5, d' "$tmp/results.json" || fail "results.json"
# Nothing measured: every row says so instead of failing.
rm "$tmp"/json/*.json
table=$(python3 "$ROOT/bench/gpu/device_summary.py" "$tmp/steps.tsv" "$tmp/json" "$tmp/results.json" 5)
[[ $(grep -c "not measured" <<<"$table") -eq 5 ]] || fail "empty run's table:"$'\n'"$table"
echo "device-check: dry-run, no-GPU skip and table OK"
