"""What the frozen teacher costs in one BRD training step.

Builds a BRD recipe's student (rate-BP enabled) and teacher with random weights, as a run does,
and times, over ``--steps`` steps after one warm-up, (a) the teacher alone on the batch (its
features and logits, no autograd: what runs once per batch even without hybrids) and (b) the
whole BRD step (student spike and rate pass, teacher, hybrids through the teacher's later
stages, backward). Prints the medians and the teacher's share of the step.

    PYTHONPATH=. python benchmarks/brd_teacher_cost.py brd-cifar10 --batch 16
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from sj_distill import config, rate, sj
from sj_distill.engine.build import build_ann, build_loss, build_student
from sj_distill.hybrid import BlockReplacement
from sj_distill.teachers import split_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default="brd-cifar10")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    recipe = config.load_recipe(args.recipe)
    size, T, classes = recipe["data"]["img_size"], recipe["data"]["T"], 10
    teacher = split_model(build_ann(recipe, classes, 3), image_size=size)
    student = rate.enable(build_student(recipe, classes, 3))
    hybrid = BlockReplacement(student, teacher, **recipe["train"]["brd"]["params"]).train()
    loss_fn = build_loss(recipe)
    x, y = torch.rand(T, args.batch, 3, size, size), torch.randint(0, classes, (args.batch,))
    teacher_s, step_s = [], []
    for i in range(args.steps + 1):
        began = time.perf_counter()
        with torch.no_grad():
            teacher.forward_from(len(teacher.stages), teacher.features(x.mean(0))[-1])
        middle = time.perf_counter()
        out = hybrid(x)
        loss_fn(out["student"], out["teacher"], y, hybrid_logits=out["hybrids"]).backward()
        sj.reset(student)
        done = time.perf_counter()
        if i:
            teacher_s.append(middle - began)
            step_s.append(done - middle)
    teacher_med, step_med = statistics.median(teacher_s), statistics.median(step_s)
    print(f"{args.recipe} (student {recipe['student']['model']}, teacher "
          f"{recipe['teacher']['model']}, T={T}, batch {args.batch}, {torch.get_num_threads()} "
          f"threads): teacher forward {teacher_med * 1000:.0f} ms, whole BRD step "
          f"{step_med * 1000:.0f} ms; the teacher's forward is {teacher_med / step_med:.1%} of "
          "the step")


if __name__ == "__main__":
    main()
