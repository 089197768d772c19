"""What may import what (docs/architecture.md), read from the code's own import statements."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPOSITORY, ROOT

SOURCE = ROOT / "src"
PACKAGES = ("svd_contract", "svd_engine", "svd_triton_backend", "svd_triton", "svd_gateway")
MAY_IMPORT = {
    "svd_contract": set(),
    "svd_engine": {"svd_contract"},
    "svd_triton_backend": {"svd_contract", "svd_engine"},
    "svd_triton": {"svd_contract"},
    "svd_gateway": {"svd_contract", "svd_triton"},
    "model_repository": {"svd_contract", "svd_triton_backend", "svd_engine"},
}
"""Each layer's project imports at module level; nothing imports a layer above it."""
LAZY = {("svd_triton/cli.py", "svd_engine"), ("svd_triton/gateway_cli.py", "svd_gateway"),
        ("svd_triton/doctor.py", "svd_engine")}
"""Imports allowed inside one function only: `svd-triton weights` and `doctor` (torch-free checks of
svd_engine) and `svd-triton gateway` (the gateway extra)."""
NEVER = {
    "svd_contract": None,  # the standard library only
    "svd_engine": {"triton_python_backend_utils", "tritonclient"},
    "svd_triton": {"torch", "diffusers", "transformers", "triton_python_backend_utils"},
    "svd_gateway": {"torch", "diffusers", "transformers", "triton_python_backend_utils"},
}


def layer(path: Path) -> str:
    return "model_repository" if REPOSITORY in path.parents else path.relative_to(SOURCE).parts[0]


def files():
    return sorted([*SOURCE.glob("*/**/*.py"), *REPOSITORY.glob("*/1/model.py")])


def imports(path: Path):
    """(module imported, at module level?) for each import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(SOURCE).parts[:-1]) if SOURCE in path.parents else ""
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.append((module, id(node) in top_level))
    return found


def relative(path: Path) -> str:
    return path.relative_to(SOURCE if SOURCE in path.parents else ROOT).as_posix()


@pytest.mark.parametrize("path", files(), ids=relative)
def test_each_module_imports_only_the_layers_below_it(path):
    own = layer(path)
    for module, at_top in imports(path):
        root = module.split(".")[0]
        if root in PACKAGES and root != own:
            allowed = root in MAY_IMPORT[own] or (not at_top and (relative(path), root) in LAZY)
            assert allowed, f"{relative(path)} imports {module}: {own} may import only {sorted(MAY_IMPORT[own])}"
        never = NEVER.get(own, set())
        if never is None:
            assert root in sys.stdlib_module_names or root == own, f"{relative(path)} imports {module}: svd_contract has no dependencies"
        else:
            assert root not in never, f"{relative(path)} imports {module}"


def test_api_families_do_not_import_each_other():
    """Each family folder translates its own API alone; what families share lives below them."""
    families = SOURCE / "svd_gateway" / "families"
    for path in families.glob("*/*.py"):
        own = f"svd_gateway.families.{path.parent.name}"
        for module, _ in imports(path):
            other = module.startswith("svd_gateway.families.") and not module.startswith(own + ".") and module != own
            assert not other, f"{relative(path)} imports {module}"
    shared = [path for path in (SOURCE / "svd_gateway").glob("*.py")]
    for path in shared:  # and nothing below the families imports one (app.py registers them)
        if path.name != "app.py":
            assert not any(module.startswith("svd_gateway.families") for module, _ in imports(path)), relative(path)


def test_there_is_no_import_cycle():
    """Module-level imports between the project's own modules form no cycle."""
    def name(path: Path) -> str:
        parts = path.relative_to(SOURCE).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {name(p): p for p in SOURCE.glob("*/**/*.py")}
    graph = {}
    for module, path in modules.items():
        targets = set()
        for imported, at_top in imports(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]  # `from package import name`: the package
            if at_top and imported and imported != module and not module.startswith(imported + "."):
                targets.add(imported)
        graph[module] = targets
    visiting, done = [], set()

    def visit(module):
        if module in done:
            return
        assert module not in visiting, "import cycle: " + " → ".join(visiting[visiting.index(module):] + [module])
        visiting.append(module)
        for target in graph[module]:
            visit(target)
        visiting.pop()
        done.add(module)

    for module in graph:
        visit(module)


def test_the_thin_client_and_the_gateway_never_import_torch():
    """In a fresh interpreter: the client, the CLI and the gateway load without torch or diffusers."""
    code = ("import sys, svd_contract, svd_triton, svd_triton.cli, svd_triton.client, svd_gateway, svd_gateway.app; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'svd_engine') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
