"""Every `file.py: name` pointer in the docs names a file and a definition that exist."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).parents[2]
POINTER = re.compile(r"`([a-z_][\w/]*\.py): ([A-Za-z_][\w.]*)`")


def definitions(path: pathlib.Path) -> set[str]:
    """Dotted names defined in a module: functions, classes, methods, module-level assignments."""
    names: set[str] = set()

    def walk(node, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(prefix + child.name)
                walk(child, prefix + child.name + ".")
            elif isinstance(child, (ast.Assign, ast.AnnAssign)) and not prefix:
                targets = child.targets if isinstance(child, ast.Assign) else [child.target]
                names.update(t.id for t in targets if isinstance(t, ast.Name))

    walk(ast.parse(path.read_text()), "")
    return names


def test_every_pointer_resolves():
    pointers = [(doc.name, f, n) for doc in sorted((ROOT / "docs").glob("*.md")) for f, n in POINTER.findall(doc.read_text())]
    assert len(pointers) > 40
    broken = [(doc, f, n) for doc, f, n in pointers if not (ROOT / f).is_file() or n not in definitions(ROOT / f)]
    assert not broken, f"pointers to nothing: {broken}"
