"""Every ```python block of README.md and docs/*.md runs as written (issue 14, item 4).

Each block is a program of its own, unless the line before its opening fence is the marker
``<!-- continue -->``: then it continues the previous block (same names, run together).
Blocks run in a temporary working directory, offline, on CPU. Code that must not run (shell
sessions, output, pseudo-code) belongs in a block of another language (```bash, ```text).
"""
import re
from pathlib import Path
from typing import List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONTINUE = "<!-- continue -->"
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")


def programs(path: Path) -> List[Tuple[str, str]]:
    """``(label, code)`` per program of ``path``: its ```python blocks, each joined with the
    blocks marked as its continuations; ``label`` is ``FILE:LINE`` of the first block."""
    lines = path.read_text().splitlines()
    found: List[List] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, language = opening.groups()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if language == "python":
            code = "\n".join(line[len(indent):] for line in lines[i + 1:end]) + "\n"
            previous = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
            if previous == CONTINUE:
                if not found:
                    raise ValueError(f"{path.name}:{i + 1}: {CONTINUE} before the first block")
                found[-1][1] += code
            else:
                found.append([f"{path.name}:{i + 1}", code])
        i = end + 1
    return [tuple(p) for p in found]


PROGRAMS = [program for path in DOCS for program in programs(path)]


def test_extractor_joins_marked_continuations(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("text\n```python\na = 1\n```\n\n<!-- continue -->\n```python\nb = a + 1\n```\n"
                   "```bash\nnot python\n```\n```python\nc = 3\n```\n"
                   "- item\n\n  ```python\n  d = 4\n  ```\n")
    assert programs(doc) == [("doc.md:2", "a = 1\nb = a + 1\n"), ("doc.md:13", "c = 3\n"),
                             ("doc.md:18", "d = 4\n")]


def test_every_doc_with_python_blocks_is_collected():
    labels = {label.split(":")[0] for label, _ in PROGRAMS}
    expected = {path.name for path in DOCS if "```python" in path.read_text()}
    assert "README.md" in expected and labels == expected


@pytest.mark.parametrize("label, code", PROGRAMS, ids=[label for label, _ in PROGRAMS])
def test_python_block_runs(label, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, label, "exec"), {"__name__": "__docs__"})
