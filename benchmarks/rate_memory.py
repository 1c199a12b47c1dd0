"""BPTT vs rate-based backprop: peak training memory and step time against T.

CIFAR ResNet-18 backbone, batch 16, 32x32, T = 1, 2, 4, 8, 16, one subprocess per setting
(peak RSS; on CUDA also torch's allocator peak). Prints a markdown table and the issue's
targets, writes a PNG plot. The logic lives in ``sj_distill.rate_bench`` (also reachable as
``sj-distill bench memory``).

    PYTHONPATH=$PWD python benchmarks/rate_memory.py --png benchmarks/rate_memory.png
    PYTHONPATH=$PWD python benchmarks/rate_memory.py --device cuda --png rate_memory_cuda.png
"""
import sys

from sj_distill.rate_bench import main

if __name__ == "__main__":
    sys.exit(main())
