"""Docstring share and function lengths of the library (``spectral3d``, ``backbones3d``), counted with ``ast``.

    python tools/code_stats.py            # summary, the files with the most docstring, functions over 80 lines
    python tools/code_stats.py --json     # the same as JSON

A line counts as docstring when it lies inside a module, class or function docstring; "lines" are the
non-blank lines of the file. ``tests/test_code_shape.py`` asserts the limits the project keeps.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spectral3d", "backbones3d")
MAX_FUNCTION_LINES = 80


def _docstring_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def file_stats(path: Path) -> dict:
    """Non-blank lines, docstring lines and the functions (qualified name, length) of one file."""
    text = path.read_text()
    tree = ast.parse(text)
    nonblank = {i for i, line in enumerate(text.splitlines(), 1) if line.strip()}
    functions = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([d.lineno for d in child.decorator_list] + [child.lineno])
                functions.append((f"{prefix}{child.name}", child.end_lineno - start + 1))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")

    visit(tree, "")
    return {
        "lines": len(nonblank),
        "docstring_lines": len(_docstring_lines(tree) & nonblank),
        "functions": functions,
    }


def library_stats(root: Path = ROOT) -> dict:
    files = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            files[str(path.relative_to(root))] = file_stats(path)
    lines = sum(f["lines"] for f in files.values())
    doc = sum(f["docstring_lines"] for f in files.values())
    long = [(f"{file}:{fn}", n) for file, f in files.items() for fn, n in f["functions"] if n > MAX_FUNCTION_LINES]
    return {
        "lines": lines,
        "docstring_lines": doc,
        "docstring_share": doc / max(lines, 1),
        "long_functions": sorted(long, key=lambda t: -t[1]),
        "files": files,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    stats = library_stats()
    if args.json:
        print(json.dumps({k: v for k, v in stats.items() if k != "files"}, indent=1))
        return
    print(
        f"library: {stats['lines']} non-blank lines, {stats['docstring_lines']} docstring lines "
        f"({100 * stats['docstring_share']:.1f} %)"
    )
    worst = sorted(stats["files"].items(), key=lambda kv: -kv[1]["docstring_lines"] / max(kv[1]["lines"], 1))
    print("most docstring (share of the file):")
    for file, f in worst[:12]:
        share = 100 * f["docstring_lines"] / max(f["lines"], 1)
        print(f"  {share:5.1f} %  {f['docstring_lines']:4d}/{f['lines']:<5d} {file}")
    print(f"functions over {MAX_FUNCTION_LINES} lines:")
    for where, n in stats["long_functions"]:
        print(f"  {n:4d}  {where}")


if __name__ == "__main__":
    main()
