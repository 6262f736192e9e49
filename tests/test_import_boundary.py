"""The web process's import boundary (lora_gui/boundary.py), checked statically: the import closure of
app.py and lora_gui/ (module-level and lazy imports, read with ast) reaches no heavy library and no engine
module that is not declared torch-free, and only the gateway imports engine modules beyond the shared
definitions. tests/test_gui_no_torch.py checks chosen call paths at run time beside it."""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Optional

from lora_gui import boundary

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("app", "lora_gui", "trainer")


def module_file(name: str) -> Optional[Path]:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    package = package[:len(package) - node.level + 1]
    return ".".join(package + ([node.module] if node.module else []))


@lru_cache(maxsize=None)
def imports_of(name: str) -> tuple[str, ...]:
    """Every module `name` imports anywhere (functions included, `if TYPE_CHECKING:` blocks left out);
    `from a import b` counts as a.b when that is a module of the project, else as a."""
    path = module_file(name)
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                found.extend(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _absolute(child, name, path.name == "__init__.py")
                found.append(base)
                found.extend(f"{base}.{a.name}" for a in child.names if module_file(f"{base}.{a.name}"))
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return tuple(dict.fromkeys(found))


def web_modules() -> list[str]:
    return ["app"] + sorted(module_name(p) for p in (ROOT / "lora_gui").rglob("*.py"))


def closure() -> dict[str, str]:
    """Every module the web process can import -> the module that imports it first."""
    reached: dict[str, str] = {}
    todo = [(m, "") for m in web_modules()]
    while todo:
        name, via = todo.pop()
        if name in reached:
            continue
        reached[name] = via
        parts = name.split(".")
        todo.extend((".".join(parts[:i]), name) for i in range(1, len(parts)))  # parent packages run first
        if parts[0] in PROJECT and module_file(name):
            todo.extend((target, name) for target in imports_of(name)
                        if (name, target) not in boundary.ENGINE_ONLY_IMPORTS)
    return reached


def _chain(reached: dict[str, str], name: str) -> str:
    chain = [name]
    while reached.get(chain[-1]):
        chain.append(reached[chain[-1]])
    return " <- ".join(chain)


def _heavy(name: str) -> bool:
    return any(name == h or name.startswith(h + ".") for h in boundary.HEAVY_MODULES)


def test_the_web_process_reaches_no_heavy_library():
    reached = closure()
    heavy = [_chain(reached, m) for m in reached if _heavy(m)]
    assert not heavy, "\n".join(heavy)


def test_every_engine_module_the_web_process_reaches_is_declared_torch_free():
    reached = closure()
    undeclared = [_chain(reached, m) for m in reached
                  if m.split(".")[0] == "trainer" and module_file(m) and not boundary.is_torch_free(m)]
    assert not undeclared, "declare them in lora_gui/boundary.py TORCH_FREE, or keep them out:\n" + "\n".join(undeclared)


def _engine_imports(web_module: str) -> Iterator[str]:
    for target in imports_of(web_module):
        if target.split(".")[0] == "trainer" and module_file(target):
            yield target


def test_only_the_gateway_imports_engine_modules_beyond_the_shared_definitions():
    bypass = {m: sorted(set(_engine_imports(m)) - set(boundary.SHARED_DEFINITIONS))
              for m in web_modules() if m != boundary.GATEWAY}
    bypass = {m: targets for m, targets in bypass.items() if targets}
    assert not bypass, f"route these through {boundary.GATEWAY}: {bypass}"


def test_the_declarations_name_real_torch_free_modules():
    for name in boundary.TORCH_FREE:
        assert module_file(name.removesuffix(".*")), name
    assert all(boundary.is_torch_free(m) for m in boundary.SHARED_DEFINITIONS)
    for importer, target in boundary.ENGINE_ONLY_IMPORTS:
        assert target in imports_of(importer), (importer, target)  # no stale exception
        assert not boundary.is_torch_free(target)
    for path in (ROOT / "trainer").rglob("*.py"):  # a declared module does not import heavy code itself
        name = module_name(path)
        if boundary.is_torch_free(name):
            heavy = [t for t in imports_of(name) if _heavy(t) and (name, t) not in boundary.ENGINE_ONLY_IMPORTS]
            assert not heavy, (name, heavy)


def test_the_scanner_sees_lazy_imports():
    """A heavy import inside a function counts (trainer.families.detect reads a .ckpt with torch lazily)."""
    assert "trainer.families.single_file" in imports_of("trainer.families.detect")
    assert "torch" in imports_of("trainer.families.single_file")
    assert not boundary.is_torch_free("trainer.families.single_file")
    assert boundary.is_torch_free("trainer.preflight.model") and boundary.is_torch_free("trainer.preflight")
