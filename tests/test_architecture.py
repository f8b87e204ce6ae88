"""The architecture's rules, enforced: layer contracts (import-linter), no imports hidden in functions
except optional heavy dependencies, and no modules loaded by name strings."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "diffzoo"

#: Optional or heavy third-party packages that library code may import inside a function (so that
#: importing diffzoo does not pull them in). Nothing of diffzoo itself is ever imported in a function.
LAZY_OK = {
    "diffusers",
    "transformers",
    "accelerate",
    "sklearn",
    "scipy",
    "k_diffusion",
    "torchdiffeq",
    "torchsde",
    "onnxruntime",
    "torchao",
    "imwatermark",
    "blind_watermark",
    "pywt",
    "ot",
    "skimage",
    "resource",
    "pytest",  # diffzoo selftest: dev dependencies, imported when the command runs
    "hypothesis",
    "fastapi",  # diffzoo studio: the `studio` extra, imported when the server starts
    "uvicorn",
    "playwright",
}


def _function_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if in_function and isinstance(child, ast.Import):
                found.extend((child.lineno, a.name) for a in child.names)
            elif in_function and isinstance(child, ast.ImportFrom):
                found.append((child.lineno, "." * child.level + (child.module or "")))
            visit(child, inner)

    visit(tree, False)
    return found


def test_layer_contracts_hold():
    cli = pytest.importorskip("importlinter.cli")
    loggers = [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    disabled = [lg.disabled for lg in loggers]
    try:
        code = cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"))
    finally:  # import-linter's logging setup disables every existing logger; later tests capture logs
        for lg, was in zip(loggers, disabled):
            lg.disabled = was
    assert code == 0, "run `lint-imports` for details"


def test_no_diffzoo_import_inside_functions():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        for line, mod in _function_imports(path):
            if mod.startswith(".") or mod.split(".")[0] not in LAZY_OK:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {mod}")
    assert not bad, "imports inside functions (hoist them; only optional heavy packages may be lazy):\n" + "\n".join(
        bad
    )


def test_no_modules_loaded_by_name():
    """``import_module``/``find_spec`` only for an optional third-party package named by a literal."""
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                "import_module",
                "find_spec",
                "__import__",
            ):
                arg = node.args[0] if node.args else None
                name = arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None
                if name is None or name.split(".")[0] not in LAZY_OK:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, f"modules loaded by name strings (use plain imports): {bad}"


def test_registries_list_real_modules():
    from diffzoo import cli, models, recipes
    from diffzoo.cli import bench

    assert {m.__name__.rsplit(".", 1)[1] for m in cli.COMMANDS} == {
        "train",
        "sample",
        "bench",
        "demo",
        "edit",
        "restore",
        "selftest",
        "studio",
        "quantize",
        "detect",
        "protect",
        "tryon",
        "watermark",
        "attack",
        "distill",
    }
    names = lambda mods: {m.__name__.rsplit(".", 1)[1] for m in mods}  # noqa: E731
    assert names(bench.BENCHES) == {
        "samplers", "editing", "discrete", "inverse", "distill", "conditioning", "quant", "forensics", "provenance",
        "accel",
    }  # fmt: skip
    assert all(callable(m.register) for m in (*cli.COMMANDS, *bench.BENCHES))
    assert {"foundation", "tinysd", "masked", "idm"} <= names(recipes.MODULES)
    assert {"mlp", "unet", "classifier", "transformer", "tinysd", "idm"} <= names(models.MODULES)
    assert {"toy2d", "digits-unet", "masked-digits", "tinysd-unet", "idm-cs"} <= set(recipes.recipes())
    assert {"mlp", "digits_unet", "tinysd", "idm_cs", "masked-transformer"} <= set(models.archs())
