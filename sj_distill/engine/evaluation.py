"""``sj-distill eval CKPT``: accuracy, firing rates, synaptic operations and energy of a trained
student, with a PNG of the firing rate per layer."""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Dict, Optional

import torch

from .. import config, energy
from . import checkpoint
from .loop import evaluate
from .build import build_data, build_student, input_adapter


def resolve_checkpoint(path: str | Path) -> Path:
    """``path`` itself, or for a run folder its ``student.pt`` (else its ``last.pt``)."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in ("student.pt", "last.pt"):
        if (path / name).is_file():
            return path / name
    raise checkpoint.CheckpointError(f"run folder {path} holds neither student.pt nor last.pt: "
                                     "run `sj-distill recipe` into it first")


def _recipe_of(ckpt: Dict, path: Path) -> Dict:
    """The recipe stored in the checkpoint, else the run folder's ``recipe.yaml``."""
    if "recipe" in ckpt:
        return ckpt["recipe"]
    saved = path.parent / "recipe.yaml"
    if not saved.is_file():
        raise checkpoint.CheckpointError(f"checkpoint {path} holds no recipe and there is no "
                                         f"{saved} next to it: it was not written by "
                                         "`sj-distill recipe`")
    return config.validate(config.parse_yaml(saved.read_text()), str(saved))


def evaluate_checkpoint(path: str | Path, data_dir: Optional[str] = None, out_dir: Optional[str] = None,
                        batch_size: Optional[int] = None, max_batches: Optional[int] = None) -> Dict:
    """Evaluate a run folder, or its ``student.pt`` or ``last.pt``; writes ``eval.json`` and
    ``firing_rates.png`` next to the checkpoint (or into ``out_dir``)."""
    path = resolve_checkpoint(path)
    ckpt = checkpoint.load(path)
    recipe = _recipe_of(ckpt, path)
    if "model" in ckpt:
        weights = ckpt["model"]
    elif "modules" in ckpt and "student" in ckpt["modules"]:
        weights = ckpt["modules"]["student"]
    else:
        raise checkpoint.CheckpointError(f"checkpoint {path} holds no student weights")
    _, test_set = build_data(recipe, data_dir)
    model = build_student(recipe, test_set.num_classes, test_set.in_chans)
    model.load_state_dict(weights)
    model.eval()
    T = recipe["data"]["T"]
    to_snn = input_adapter(T, getattr(test_set, "time_major", False))
    loader = torch.utils.data.DataLoader(test_set, batch_size=batch_size or recipe["data"]["eval_batch_size"])
    prof, handles = energy.attach(model, T)

    def profiled_input(x):
        prof.batch = x.shape[0]
        return to_snn(x)

    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    metrics = evaluate(model, itertools.islice(loader, max_batches), profiled_input,
                       torch.device("cpu"), total=total)
    for h in handles:
        h.remove()
    rates = prof.firing_rates()
    result = {"checkpoint": str(path), "recipe": recipe["name"], **metrics,
              **prof.operations(), "T": T, "firing_rates": rates,
              "mean_firing_rate": sum(rates.values()) / max(len(rates), 1)}
    target = Path(out_dir) if out_dir else path.parent
    target.mkdir(parents=True, exist_ok=True)
    (target / "eval.json").write_text(json.dumps(result, indent=2))
    energy.plot_firing_rates(rates, str(target / "firing_rates.png"),
                             f"{recipe['name']}: firing rate per layer (T={T})")
    result["png"] = str(target / "firing_rates.png")
    return result


def format_result(result: Dict) -> str:
    lines = [f"checkpoint     {result['checkpoint']}  (recipe {result['recipe']}, T={result['T']})",
             f"top-1 / top-5  {result['top1']:.2f} / {result['top5']:.2f}  "
             f"({result['samples']} samples, loss {result['loss']:.4f})",
             f"SOPs           {result['sops'] / 1e6:.2f} M per sample (accumulates, {energy.E_AC_PJ} pJ)",
             f"MACs           {result['macs'] / 1e6:.2f} M per sample (encoding layer, {energy.E_MAC_PJ} pJ)",
             f"energy         {result['energy_mj']:.4f} mJ per sample",
             f"firing rate    {result['mean_firing_rate']:.4f} mean over {len(result['firing_rates'])} layers",
             "", "| layer | firing rate |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in result["firing_rates"].items()]
    lines.append(f"\nplot: {result['png']}")
    return "\n".join(lines)
