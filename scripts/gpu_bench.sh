#!/usr/bin/env bash
# Extraction benchmark on a GPU machine, on Keras' JAX backend (such machines here have JAX but no
# TensorFlow, and no keras/namex/optree: carry those as wheels in .whl/, see below).
#
# Prepare once, on the development machine, in the repo root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl keras==3.15.1 namex optree
# Then run this script there with .whl carried, e.g. `bash scripts/gpu_bench.sh 5000`.
# `featx extract --engine ray` rows need ray[data] (with pyarrow, pandas...) installed on that
# machine; without it they are left out, with a note. Rows: decode alone (threads; and Ray tasks on every core), the
# model alone (the ceiling), featx extract with each engine; the summary says which stage bounds it.
# A small run on a CPU, to check that it works:
#   BATCH_SIZES=8 PRECISIONS=float32 CEILING_BATCHES=2 bash scripts/gpu_bench.sh 32
# Writes $OUT/gpu_bench_bs*.json (or ./) and prints the table.
set -euo pipefail
n_images=${1:-5000}
batch_sizes=${BATCH_SIZES:-"32 128"}
precisions=${PRECISIONS:-"float32,bfloat16"}
ceiling_batches=${CEILING_BATCHES:-20}
out_dir=${OUT:-.}
mkdir -p "$out_dir"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export KERAS_BACKEND=jax
engines=local
if python3 -c "import ray.data" 2>/dev/null; then
  engines=local,ray
else
  echo "note: Ray is not installed here: no --engine ray rows (pip install 'featx[ray]')"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
for bs in $batch_sizes; do
  python3 scripts/bench_extract.py --generate "$n_images" --size 500x375 \
    --model vgg16 --layer block5_pool --weights none --precision "$precisions" \
    --batch-size "$bs" --workers "$(nproc)" --ceiling-images $((bs * ceiling_batches)) \
    --skip-reference --engines "$engines" --json "$out_dir/gpu_bench_bs$bs.json"
done
