"""Reading the project's own source in tests."""

from __future__ import annotations

import ast
import gc


def parse_python(text: str) -> ast.Module:
    """``ast.parse`` with the garbage collector paused.

    CPython 3.11 (gh-106905): a finalizer the collector runs while the AST is being built (an
    unclosed socket's ResourceWarning, say) leaves the builder's depth count wrong, and the
    parse fails with "AST constructor recursion depth mismatch".
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(text)
    finally:
        if enabled:
            gc.enable()
