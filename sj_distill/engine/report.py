"""Markdown and CSV tables of expected against achieved accuracy."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, Iterable, List


def _fmt(value, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def summary_table(summaries: Iterable[Dict]) -> str:
    """``| run | recipe | method | loss | epochs | expected | top-1 | delta | top-5 | teacher |``;
    ``run`` is the run folder."""
    lines = ["| run | recipe | method | loss | epochs | expected top-1 | top-1 | delta | top-5 | "
             "teacher top-1 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        delta = (s["top1"] - s["expected_top1"]
                 if isinstance(s.get("top1"), (int, float))
                 and isinstance(s.get("expected_top1"), (int, float)) else None)
        lines.append(f"| {s.get('run', '-')} | {s['recipe']} | {s.get('method', '-')} | "
                     f"{s.get('loss', '-')} | {s.get('epochs', '-')} | {_fmt(s.get('expected_top1'))} | "
                     f"{_fmt(s.get('top1'))} | {_fmt(delta)} | {_fmt(s.get('top5'))} | "
                     f"{_fmt(s.get('teacher_top1'))} |")
    return "\n".join(lines)


def collect(run_dirs: Iterable[str]) -> List[Dict]:
    """Summaries of every ``summary.json`` under the given folders (searched recursively), each
    with ``run`` set to the folder it was found in."""
    found = []
    for root in run_dirs:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"run folder {root} does not exist")
        found += [{**_read_summary(p), "run": str(p.parent)}
                  for p in sorted(root.rglob("summary.json"))]
    return found


def _read_summary(path: Path) -> Dict:
    """One run's ``summary.json``; a damaged file is one ``ValueError`` naming it."""
    try:
        summary = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is damaged (not valid JSON: {err}); delete it or rerun that "
                         "run with --resume to write it again") from None
    if not isinstance(summary, dict) or "recipe" not in summary:
        raise ValueError(f"{path} is not an sj-distill run summary (no 'recipe'); move it out "
                         "of the folders given to `sj-distill table`") from None
    return summary


CSV_COLUMNS = ("recipe", "method", "loss", "epochs", "expected_top1", "top1", "delta", "top5",
               "best_top1", "teacher_top1", "seconds", "world_size", "spikingjelly")


def write_csv(summaries: Iterable[Dict], path: str) -> None:
    """The table of :func:`summary_table` as CSV (one row per run, ``CSV_COLUMNS``)."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for s in summaries:
            delta = (s["top1"] - s["expected_top1"]
                     if isinstance(s.get("top1"), (int, float))
                     and isinstance(s.get("expected_top1"), (int, float)) else None)
            writer.writerow({**{k: s.get(k) for k in CSV_COLUMNS}, "delta": delta})
