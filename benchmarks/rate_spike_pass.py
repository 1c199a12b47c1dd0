"""The rate-BP spike pass alone vs SpikingJelly's plain no-grad multi-step forward.

The logic lives in ``sj_distill.bench.spike`` (also ``sj-distill bench speed``): both timed
alternately in one process, medians; results go to
``benchmarks/results/rate/spike_pass_<device>.*`` (target: ratio <= 1.2).

    PYTHONPATH=$PWD python benchmarks/rate_spike_pass.py --device cpu
    PYTHONPATH=$PWD python benchmarks/rate_spike_pass.py --device cpu --eligibility both \\
        --name spike_pass_cpu_both
    PYTHONPATH=$PWD python benchmarks/rate_spike_pass.py --device cuda
"""
import sys

from sj_distill.bench.spike import main

if __name__ == "__main__":
    sys.exit(main())
