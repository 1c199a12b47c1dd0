"""The sweep spike pass: a multi-step model run through the whole network on chunks of time
steps, so that no ``[T, ...]`` activation exists and the pass's memory does not grow with
``T`` (``rate.enable(model, spike_pass="sweep")``).

A BatchNorm in training mode normalises every step with its statistics over all ``T*B``
samples, known only once every step of its input has been computed. So the pass sweeps
over the sequence several times, ``time_chunk`` steps per call of the model's forward:

* every sweep starts from the neurons' starting potentials and the random generator's
  starting state, and runs the chunks up to the first BatchNorm whose statistics are not
  known yet (the *frontier*); there each chunk adds its statistics and stops;
* after the sweep the frontier's statistics over all ``T`` steps are settled, and later
  sweeps normalise with them;
* the first sweep that reaches the end of the network ends the pass.

Every record (firing rate and eligibility, max-pool and dropout means) is filled in the first
sweep that computes its layer; a BatchNorm's statistics in the sweep that stops at it. So
every value is the one of a single pass over all ``T`` steps (to rounding: the statistics
are pooled over chunks).

**Replay.** What a sweep computed before its frontier, later sweeps compute again. A module
whose output is binary (spikes) or small non-negative integers (a sum of spike trains) is
stored packed (1 bit or 1 byte per value, for every chunk) once a sweep has computed it for
all chunks, and later sweeps return the stored output instead of calling it: a residual
block or a neuron layer before the frontier costs an unpacking. What is stored grows with
``T`` (``T*N/8`` bytes for binary), 32 times slower than float32 activations; the outputs
of modules inside a replayed one are dropped. Models with torch dropouts (a fresh random mask
per call) are swept without replay, since skipping a module would shift the random stream.
"""
from __future__ import annotations

import types
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

_SHIFTS = torch.arange(8, dtype=torch.uint8)


class FrontierReached(Exception):
    """Raised by the first BatchNorm of a sweep whose statistics are not settled yet, once it
    has added the current chunk's statistics: the rest of the network cannot run before
    they are known."""


def pack(t: torch.Tensor) -> Optional[Tuple[str, torch.Tensor]]:
    """``("bits", uint8 [ceil(n/8)])`` for a tensor of zeros and ones, ``("u8", uint8 [n])``
    for integers in 0..255, None otherwise."""
    flat = t.reshape(-1)
    if bool(((flat == 0) | (flat == 1)).all()):
        padded = torch.cat([flat, flat.new_zeros((-flat.numel()) % 8)]).to(torch.uint8)
        shifts = _SHIFTS.to(t.device)
        return "bits", (padded.view(-1, 8) << shifts).sum(1, dtype=torch.uint8)
    if bool(((flat >= 0) & (flat <= 255) & (flat == flat.round())).all()):
        return "u8", flat.to(torch.uint8)
    return None


def unpack(kind: str, packed: torch.Tensor, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """The tensor :func:`pack` stored."""
    n = shape.numel()
    if kind == "bits":
        shifts = _SHIFTS.to(packed.device)
        values = ((packed.unsqueeze(1) >> shifts) & 1).view(-1)[:n]
    else:
        values = packed
    return values.to(dtype).view(shape)


class _Stored:
    """The packed outputs of one use of a module, one per chunk of a sweep."""

    def __init__(self, parent: Optional[tuple]):
        self.parent = parent
        self.chunks: List[Tuple[str, torch.Tensor, torch.Size, torch.dtype]] = []
        self.storable = True
        self.complete = False  # stored for every chunk of a sweep: replayed from now on

    def add(self, out) -> None:
        packed = pack(out) if isinstance(out, torch.Tensor) and out.is_floating_point() else None
        if packed is None:
            self.storable, self.chunks = False, []
            return
        self.chunks.append((packed[0], packed[1], out.shape, out.dtype))


class Replayer:
    """Wraps every submodule's forward for one spike pass (restored by :meth:`close`): a call
    with a complete store returns the stored output of its chunk; any other call runs and,
    if its module is storable, stores its output."""

    def __init__(self, model: nn.Module):
        self.stores: Dict[tuple, _Stored] = {}
        self.chunk = 0
        self._uses: Dict[int, int] = {}
        self._stack: List[tuple] = []
        self._wrapped: List[Tuple[nn.Module, Optional[Callable]]] = []
        for module in model.modules():
            if module is model:
                continue
            previous = module.__dict__.get("forward")
            self._wrapped.append((module, previous))
            forward = module.forward
            if previous is None and type(module).forward is nn.Sequential.forward:
                forward = types.MethodType(self._resuming_sequential, module)
            module.forward = types.MethodType(self._wrapper(forward), module)

    def _wrapper(self, forward: Callable) -> Callable:
        replayer = self

        def replaying_forward(module: nn.Module, *args, **kwargs):
            return replayer.call(module, forward, args, kwargs)
        return replaying_forward

    def root_forward(self, model: nn.Module, forward: Callable) -> Callable:
        """The model's own ``forward``, resuming like a sequence when the model is a plain
        ``nn.Sequential``."""
        if forward == types.MethodType(nn.Sequential.forward, model):
            return types.MethodType(self._resuming_sequential, model)
        return forward

    def _resuming_sequential(self, module: nn.Sequential, x):
        """``nn.Sequential``'s forward, started after its last child with a complete store
        (a plain sequence feeds each child only the previous child's output, so the children
        before it are not needed)."""
        children = list(module)
        start = 0
        for index, child in enumerate(children):
            stored = self.stores.get((id(child), self._uses.get(id(child), 0)))
            if stored is not None and stored.complete:
                start = index
        for child in children[start:]:
            x = child(x)
        return x

    def begin_chunk(self, chunk: int) -> None:
        self.chunk, self._uses, self._stack = chunk, {}, []

    def call(self, module: nn.Module, forward: Callable, args, kwargs):
        use = self._uses.get(id(module), 0)
        self._uses[id(module)] = use + 1
        key = (id(module), use)
        stored = self.stores.get(key)
        if stored is not None and stored.complete:
            kind, packed, shape, dtype = stored.chunks[self.chunk]
            return unpack(kind, packed, shape, dtype)
        parent = self._stack[-1] if self._stack else None
        self._stack.append(key)
        try:
            out = forward(*args, **kwargs)
        finally:
            self._stack.pop()
        if stored is None:
            stored = self.stores[key] = _Stored(parent)
        if stored.storable and len(stored.chunks) == self.chunk:
            stored.add(out)
        return out

    def end_sweep(self, chunks: int) -> None:
        """Stores filled for all ``chunks`` become complete; the stores of modules called
        inside a complete one are dropped (never called again); partial ones restart."""
        for stored in self.stores.values():
            if stored.storable and not stored.complete:
                if len(stored.chunks) == chunks:
                    stored.complete = True
                else:
                    stored.chunks = []
        for key, stored in self.stores.items():
            if stored.chunks and self._inside_complete(stored.parent):
                stored.chunks, stored.storable, stored.complete = [], False, False

    def _inside_complete(self, key: Optional[tuple]) -> bool:
        while key is not None:
            stored = self.stores.get(key)
            if stored is None:
                return False
            if stored.complete and stored.chunks:
                return True
            key = stored.parent
        return False

    def close(self) -> None:
        for module, previous in self._wrapped:
            if previous is None:
                del module.__dict__["forward"]
            else:
                module.forward = previous
        self.stores = {}
