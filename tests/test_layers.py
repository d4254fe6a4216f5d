"""The package's layers point one way: core <- models <- methods <- engine (<- launch.py),
with data and evaluate beside core; and no module imports itself through a cycle.

Every import counts, including those inside functions: a cycle dodged by a function-level
import is still a cycle. The checker runs on the source (ast), so nothing is imported.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "gen_jax"

# Which gen_jax packages each package may import (besides itself).
ALLOWED = {
    "configs": set(),                 # config files: ml_collections only
    "experiments": {"configs"},       # paper recipes: deltas on the family configs
    "core": set(),
    "data": {"core"},
    "evaluate": {"core"},
    "models": {"core"},
    "methods": {"core", "data", "evaluate", "models"},
    "engine": {"configs", "core", "data", "evaluate", "models", "methods"},
}


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
  parts = list(path.relative_to(root.parent).with_suffix("").parts)
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: pathlib.Path, module: str, modules: set[str]) -> set[str]:
  """The package modules `path` imports (a `from package import name` counts as the
  submodule when `name` is one, else as the package)."""
  is_package = path.name == "__init__.py"
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:   # relative import
        anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
        base = ".".join(anchor + ([base] if base else []))
      for alias in node.names:
        sub = f"{base}.{alias.name}"
        found.add(sub if sub in modules else base)
  return {m for m in found if m in modules and m != module}


def import_graph(root: pathlib.Path) -> dict[str, set[str]]:
  files = {module_name(p, root): p for p in root.rglob("*.py")}
  return {m: imports_of(p, m, set(files)) for m, p in files.items()}


def layer(module: str) -> str | None:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
  bad = []
  for module, targets in sorted(graph.items()):
    src = layer(module)
    if src is None:   # gen_jax/__init__.py: the public top level may import anything
      continue
    for target in sorted(targets):
      dst = layer(target)
      if dst is not None and dst != src and dst not in ALLOWED.get(src, set()):
        bad.append(f"{module} imports {target} ({src} may import only "
                   f"{sorted(ALLOWED.get(src, set())) or 'itself'})")
  return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Every elementary cycle found by a depth-first search (one per back edge)."""
  found, state, stack = [], {}, []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for t in sorted(graph.get(m, ())):
      if state.get(t) == "open":
        found.append(stack[stack.index(t):] + [t])
      elif t not in state:
        visit(t)
    stack.pop()
    state[m] = "done"

  for m in sorted(graph):
    if m not in state:
      visit(m)
  return found


def test_every_package_is_known_to_the_layer_rule():
  packages = {layer(m) for m in import_graph(ROOT)} - {None}
  assert packages == set(ALLOWED), f"new package(s) {packages - set(ALLOWED)}: add them to ALLOWED"


def test_no_import_points_up_the_stack():
  bad = upward_imports(import_graph(ROOT))
  assert not bad, "imports against the layers:\n  " + "\n  ".join(bad)


def test_no_import_cycle():
  found = cycles(import_graph(ROOT))
  assert not found, "import cycles:\n  " + "\n  ".join(" -> ".join(c) for c in found)


def test_checker_finds_a_cycle_and_an_upward_import(tmp_path):
  pkg = tmp_path / "gen_jax"
  for name, text in {
      "__init__.py": "",
      "core/__init__.py": "",
      "core/state.py": "def f():\n  from gen_jax.engine import train  # dodged, still counts\n",
      "engine/__init__.py": "",
      "engine/train.py": "from gen_jax.core import state\nfrom . import modes\n",
      "engine/modes.py": "from gen_jax.engine.train import x\n",
  }.items():
    (pkg / name).parent.mkdir(parents=True, exist_ok=True)
    (pkg / name).write_text(text)
  graph = import_graph(pkg)
  assert upward_imports(graph) == [
      "gen_jax.core.state imports gen_jax.engine.train (core may import only itself)"]
  assert sorted(sorted(set(c)) for c in cycles(graph)) == [
      ["gen_jax.core.state", "gen_jax.engine.train"],
      ["gen_jax.engine.modes", "gen_jax.engine.train"]]
