#!/usr/bin/env bash
# Reproduces every checkpoint shipped in trained/ (run from the repository root).
# Data: the real MNIST and CIFAR-10 (JPEG copy) in ../shared/datasets. CPU is enough.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA=${DATA:-../shared/datasets}
# `train` never writes into trained/ (it refuses --out there): each run is saved in runs/ and its
# two files are then moved into trained/, deliberately, by this script.
train() {
  local out=${*: -1}  # the last argument: the checkpoint's path, runs/NAME
  "$PY" -m dashboard train --data-root "$DATA" --seed 0 ${THREADS:+--threads "$THREADS"} "$@"
  mv "$out.safetensors" "$out.json" trained/
}

# THREADS=1 keeps a busy 2-core machine from thrashing (torch's two threads wait on each other).
case "${1:-mnist}" in
mnist)
  train --model course-net --dataset mnist --epochs 8 --optimizer adam --lr 0.002 --schedule onecycle --batch-size 64 --out runs/course-net-mnist
  train --model simple-convnet --dataset mnist --epochs 6 --optimizer adam --lr 0.001 --schedule onecycle --batch-size 64 --out runs/simple-convnet-mnist
  train --model lenet5 --dataset mnist --epochs 8 --optimizer adam --lr 0.002 --schedule onecycle --batch-size 64 --out runs/lenet5-mnist
  train --model bn-cnn --dataset mnist --epochs 10 --optimizer adam --lr 0.001 --schedule onecycle --batch-size 64 --out runs/bn-cnn-mnist
  ;;
study)
  # The seed study: one LeNet-5 recipe, one thing changed per run.
  base=(--model lenet5 --dataset mnist --epochs 5 --lr 0.05 --schedule constant)
  train "${base[@]}" --optimizer nesterov --batch-size 64 --out runs/study-lenet5-base
  train "${base[@]}" --optimizer nesterov --batch-size 64 --option pooling=avg --out runs/study-lenet5-avgpool
  train "${base[@]}" --optimizer nesterov --batch-size 64 --option activation=sigmoid --out runs/study-lenet5-sigmoid
  train "${base[@]}" --optimizer nesterov --batch-size 64 --option batch_norm=true --out runs/study-lenet5-batchnorm
  train "${base[@]}" --optimizer sgd --batch-size 64 --out runs/study-lenet5-sgd
  train "${base[@]}" --optimizer nesterov --batch-size 128 --out runs/study-lenet5-batch128
  ;;
cifar)
  train --model resnet18-small --dataset cifar10 --epochs "${EPOCHS:-8}" --optimizer nesterov --lr 0.1 --weight-decay 5e-4 --schedule onecycle --batch-size 128 --out runs/resnet18-small-cifar10
  train --model vgg13-small --dataset cifar10 --epochs "${EPOCHS:-8}" --optimizer nesterov --lr 0.05 --weight-decay 5e-4 --schedule onecycle --batch-size 128 --out runs/vgg13-small-cifar10
  train --model alexnet-small --dataset cifar10 --epochs "${EPOCHS:-8}" --optimizer nesterov --lr 0.02 --weight-decay 5e-4 --schedule onecycle --batch-size 128 --out runs/alexnet-small-cifar10
  ;;
esac
