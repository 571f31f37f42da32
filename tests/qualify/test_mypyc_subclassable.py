"""`run --workers N` subclasses the engine in Python (workers/mirror.py MirrorEngine); compiled
with mypyc, that needs `@mypyc_attr(allow_interpreted_subclasses=True)` on QualifyEngine itself.
At run time the decorator does nothing, so the pure-Python suite cannot see it go missing (it
once ended up on a function inserted between it and the class): read it from the source."""

from __future__ import annotations

import ast
from pathlib import Path

from sipqualify.qualify import engine


def test_the_engine_class_carries_allow_interpreted_subclasses() -> None:
    # the .py beside the module, also when the compiled .so is the one imported
    tree = ast.parse(Path(engine.__file__).with_name("engine.py").read_text())
    [cls] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "QualifyEngine"]
    decorators = [ast.unparse(d) for d in cls.decorator_list]
    assert "mypyc_attr(allow_interpreted_subclasses=True)" in decorators
    # and nothing else at module level is decorated with it by mistake
    others = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n is not cls
              and any("mypyc_attr" in ast.unparse(d) for d in n.decorator_list)]
    assert others == []
