"""BPTT vs rate-based backprop: peak training memory and images/s against T.

The logic lives in ``sj_distill.bench.rate`` (also ``sj-distill bench memory``): one
subprocess per (model, precision, method, T); results (JSON, markdown table with issue 12's
targets, PNG plot) go to ``benchmarks/results/rate/train_<device>.*``.

    PYTHONPATH=$PWD python benchmarks/rate_memory.py --device cpu --models cifar_resnet20 \\
        --T 1 2 4 --batch 8
    PYTHONPATH=$PWD python benchmarks/rate_memory.py --device cuda    # the issue's GPU grid
"""
import sys

from sj_distill.bench.rate import main

if __name__ == "__main__":
    sys.exit(main())
