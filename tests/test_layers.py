"""The package's layers point one way: core <- models <- interop <- methods <- engine
(<- launch.py), with data and evaluate beside core; no module imports itself through a
cycle; and the engine names no family.

Every import counts, including those inside functions: a cycle dodged by a function-level
import is still a cycle. The checkers run on the source (ast), so nothing is imported.
"""
from __future__ import annotations

import ast
import pathlib

from gen_jax.methods import METHODS

ROOT = pathlib.Path(__file__).resolve().parent.parent / "gen_jax"

# Which gen_jax packages each package may import (besides itself).
ALLOWED = {
    "configs": {"core"},              # config files: ml_collections, and core's UserError
    "experiments": {"configs"},       # paper recipes: deltas on the family configs
    "core": set(),
    "data": {"core"},
    "evaluate": {"core"},
    "models": {"core"},
    "interop": {"core", "models"},   # foreign weight layouts, offered by the families
    "methods": {"core", "data", "evaluate", "interop", "models"},
    "engine": {"configs", "core", "data", "evaluate", "interop", "methods"},
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


# ------------------------------------------------------------ the engine names no family

FAMILIES = frozenset(METHODS)   # 'autoregressive', 'classifier', 'diffusion', 'gan', 'vae'
# The engine may import the interface, never a family's module or a model.
ENGINE_MAY_IMPORT = {"gen_jax.methods", "gen_jax.methods.base"}
# String literals equal to a family name that mean something else there, with the reason.
NOT_A_FAMILY = {
    ("gen_jax.engine.sample_metrics", "classifier"):
        "eval.feature_extractor='classifier' (vs 'inception'): the features of a trained "
        "run whose method classifies (`Method.can_classify`), whatever its family",
}


def _is_method_attribute(node: ast.AST) -> bool:
  return isinstance(node, ast.Attribute) and node.attr == "method"


def _string_constants(node: ast.AST) -> list[str]:
  """The str constants of `node`: itself, or the elements of a tuple/list/set literal."""
  items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
  return [e.value for e in items if isinstance(e, ast.Constant) and isinstance(e.value, str)]


def family_references(root: pathlib.Path, families=FAMILIES,
                      allowed_literals=None) -> list[str]:
  """What the engine's modules say about particular families: imports of a family module
  (`gen_jax.methods.<x>` other than the interface) or of a model, comparisons of a
  `.method` attribute with a string, and string literals equal to a family name."""
  allowed_literals = NOT_A_FAMILY if allowed_literals is None else allowed_literals
  files = {module_name(p, root): p for p in root.rglob("*.py")}
  found = []
  for module, path in sorted(files.items()):
    if layer(module) != "engine":
      continue
    for target in sorted(imports_of(path, module, set(files))):
      if ((layer(target) == "methods" and target not in ENGINE_MAY_IMPORT)
          or layer(target) == "models"):
        found.append(f"{module} imports {target}")
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Compare):
        sides = [node.left, *node.comparators]
        if any(map(_is_method_attribute, sides)) and any(
            _string_constants(s) for s in sides if not _is_method_attribute(s)):
          found.append(f"{module}:{node.lineno} compares .method with a string")
      if (isinstance(node, ast.Constant) and node.value in families
          and (module, node.value) not in allowed_literals):
        found.append(f"{module}:{node.lineno} names the family {node.value!r}")
  return found


def test_the_engine_names_no_family():
  found = family_references(ROOT)
  assert not found, ("the engine must stay generic over the methods (declare a hook in "
                     "gen_jax/methods/base.py instead):\n  " + "\n  ".join(found))


def test_family_checker_finds_imports_comparisons_and_names(tmp_path):
  pkg = tmp_path / "gen_jax"
  for name, text in {
      "__init__.py": "",
      "methods/__init__.py": "",
      "methods/base.py": "",
      "methods/diffusion.py": "",
      "models/__init__.py": "",
      "models/unet.py": "",
      "engine/__init__.py": "",
      "engine/clean.py": ('"""Docstrings may mention diffusion."""\n'
                          "from gen_jax.methods import build_method\n"
                          "from gen_jax.methods.base import Method\n"
                          "def f(config):\n"
                          "  return f'{config.method!r} run' if config.x == 'a' else 0\n"),
      "engine/family_import.py": "def f():\n  from gen_jax.methods import diffusion\n",
      "engine/model_import.py": "from gen_jax.models.unet import UNet\n",
      "engine/compares.py": ("def f(config, exp):\n"
                             "  a = config.method != 'gan'\n"
                             "  return a or exp.config.method in ('x', 'y')\n"),
      "engine/names.py": "KIND = 'vae'\nOTHER = 'classifier'\n",
  }.items():
    (pkg / name).parent.mkdir(parents=True, exist_ok=True)
    (pkg / name).write_text(text)
  found = family_references(pkg, families={"diffusion", "gan", "vae", "classifier"},
                            allowed_literals={("gen_jax.engine.names", "classifier"): "why"})
  assert found == [
      "gen_jax.engine.compares:2 compares .method with a string",
      "gen_jax.engine.compares:2 names the family 'gan'",
      "gen_jax.engine.compares:3 compares .method with a string",
      "gen_jax.engine.family_import imports gen_jax.methods.diffusion",
      "gen_jax.engine.model_import imports gen_jax.models.unet",
      "gen_jax.engine.names:1 names the family 'vae'",
  ]
