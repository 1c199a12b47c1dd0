"""Benchmarks behind ``sj-distill bench``, one module each, sharing :mod:`.common`:

* :mod:`.rate` (``bench memory``): training step, BPTT against rate-based backprop, peak
  memory and images/s against T, one subprocess per setting;
* :mod:`.spike` (``bench speed``): the rate-BP spike pass alone against SpikingJelly's no-grad
  forward;
* :mod:`.train` (``bench train``): the training step of every memory-saving method (BPTT,
  rate-BP's two spike passes, SLTT, OTTT, memopt, the public rate-BP code; :mod:`.methods`,
  :mod:`.public_code`) on one model, CPU/wall seconds and peak memory against T;
* :mod:`.data` (``bench data``): samples/s of a recipe's training loader.
"""
