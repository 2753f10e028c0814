#!/usr/bin/env bash
# MLP vs conv, one vs two stochastic layers, trace vs dreg (K = 5), at an equal training budget
# of SECONDS wall-clock seconds per run on one CPU thread (the comparison harness's --seconds),
# MNIST (dynamic binarization), 1,000 test images at K = 1000. Results in
# benchmarks/results/architectures/<arch>/comparison.md; README and RESULTS.md quote them.
set -euo pipefail
SECONDS_PER_RUN=${1:-150}
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
for arch in mlp conv two_layer; do
  case $arch in
    mlp) flags="--net mlp" ;;
    conv) flags="--net conv" ;;
    two_layer) flags="--latent-layers 2" ;;
  esac
  python examples/compare_estimators.py $flags --estimators trace,dreg:5 --seeds 0 \
    --seconds "$SECONDS_PER_RUN" --train-size 60000 --test-size 1000 --eval-samples 1000 \
    --eval-every 100000 --snr-k 1 --snr-repeats 2 --no-progress --out "benchmarks/results/architectures/$arch"
done
