"""Benchmarks behind ``sj-distill bench``, one module each, sharing :mod:`.common`:

* :mod:`.rate` (``bench memory``): training step, BPTT against rate-based backprop, peak
  memory and images/s against T, one subprocess per setting;
* :mod:`.spike` (``bench speed``): the rate-BP spike pass alone against SpikingJelly's no-grad
  forward;
* :mod:`.data` (``bench data``): samples/s of a recipe's training loader.
"""
