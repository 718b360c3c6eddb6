"""The course in docs/ stays true: every ```python block of each docs/*.md file runs, in order,
in one namespace per file, and any exception (a failed assert included) fails the test with the
file, the block's line and the error. Blocks marked ```text or ```bash are not run."""
import pathlib
import re
import traceback

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(path):
    """(line number of the block's first code line, code) for each ```python block."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in BLOCK.finditer(text)]


DOC_FILES = sorted(DOCS.glob("*.md"))


def test_docs_exist_and_have_code():
    names = {p.name for p in DOC_FILES}
    assert "README.md" in names
    assert sum(1 for p in DOC_FILES if python_blocks(p)) >= 6


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_doc_code_runs(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    namespace = {"__name__": f"docs_{path.stem}"}
    for line, code in python_blocks(path):
        try:
            exec(compile(code, f"{path.name}:{line}", "exec"), namespace)
        except Exception:
            pytest.fail(f"{path.name}, block at line {line}:\n{traceback.format_exc(limit=-3)}")


def test_block_extraction(tmp_path):
    md = "intro\n```python\nx = 1\n```\n```text\nnot run\n```\n```python\nassert x == 1\n```\n"
    (tmp_path / "probe.md").write_text(md)
    assert python_blocks(tmp_path / "probe.md") == [(3, "x = 1\n"), (9, "assert x == 1\n")]


def test_breakpoints_in_docs_are_on_statements():
    """A `b path.py:N` shown in the course must name a line pdb can stop at: a statement, not a
    blank line, a comment or a docstring (pdb refuses those, or never stops)."""
    import ast

    root = DOCS.parent
    found = []
    for path in DOC_FILES:
        for rel, line in re.findall(r"\bb ([\w/]+\.py):(\d+)", path.read_text(encoding="utf-8")):
            tree = ast.parse((root / rel).read_text(encoding="utf-8"))
            lines = {n.lineno for n in ast.walk(tree) if isinstance(n, ast.stmt)
                     and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))}
            found.append(rel)
            assert int(line) in lines, f"{path.name}: breakpoint {rel}:{line} is not on a statement"
    assert found, "the kernels chapter shows a pdb breakpoint"
