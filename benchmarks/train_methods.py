"""The training step of every memory-saving method against T: BPTT, rate-BP (layer and sweep
spike passes), SpikingJelly's SLTT, OTTT and memopt, and the rate-BP public code when a
checkout is given.

The logic lives in ``sj_distill.bench.train`` (also ``sj-distill bench train``): one fresh
subprocess per (method, T), CPU and wall seconds per step and peak memory; results (JSON,
markdown with issue 21's targets, PNG) go to ``benchmarks/results/train/``.

    PYTHONPATH=$PWD python benchmarks/train_methods.py --device cpu --model resnet18 \\
        --T 2 8 16 --public-code ../rate-based-backpropagation \\
        --public-python /path/to/venv-with-spikingjelly-0.0.0.0.14/bin/python
    PYTHONPATH=$PWD python benchmarks/train_methods.py --device cpu --model vgg11   # OTTT runs
    PYTHONPATH=$PWD python benchmarks/train_methods.py --device cuda                # GPU grid
"""
import sys

from sj_distill.bench.train import main

if __name__ == "__main__":
    sys.exit(main())
