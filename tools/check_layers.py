"""Check jobd's import structure; exit 1 with a line per problem.

- No import cycle between modules of `jobd` and `jobd_client`, counting every
  import: at module level, inside functions, and under `TYPE_CHECKING`.
- Only `jobd/main.py` imports `jobd/daemon.py`.
- `jobd_client` never imports `jobd` (the client stands alone).
- `jobd/web/` (the `jobd web` process) imports of jobd only `jobd.web`,
  `jobd_client`, `jobd.config`, `jobd.errors`, `jobd.constants`,
  `jobd.scheduling.cron` and `jobd.scheduling.runs`; no other module imports it but `jobd.main`, and
  that only inside a function (the daemon never loads Starlette).
- `jobd/core/` is pure: it imports no other part of jobd but `jobd.core`,
  `jobd.constants`, `jobd.errors` and `jobd_client.protocol`, and no I/O or
  asyncio module.

Run from the repository root: `python tools/check_layers.py` (CI runs it).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("jobd", "jobd_client")
CORE_MAY_IMPORT = ("jobd.core", "jobd.constants", "jobd.errors", "jobd_client.protocol")
WEB_MAY_IMPORT = ("jobd.web", "jobd_client", "jobd.config", "jobd.errors", "jobd.constants",
                  "jobd.scheduling.cron", "jobd.scheduling.runs")
CORE_FORBIDDEN_STDLIB = ("asyncio", "socket", "selectors", "subprocess", "threading", "uvloop")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[module_name(path)] = path
    return out


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of ours that `name` imports, wherever the import statement is."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from jobd.pool import frames` imports the module `frames`;
            # `from jobd.jobs import Jobs` imports `jobd.jobs`. (Every import
            # runs the parent packages' __init__ too; that is not counted, or
            # a package could never import its own modules in __init__.)
            subs = [f"{base}.{alias.name}" for alias in node.names]
            named = [m for m in subs if m in known]
            found.update(named if named else [base])
    ours = set()
    for mod in found:
        while mod and mod not in known:        # `jobd.core.job.Job` → `jobd.core.job`
            mod = mod.rpartition(".")[0]
        if mod and mod != name:
            ours.add(mod)
    return ours


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def problems() -> list[str]:
    known = modules()
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    out = [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    for name, deps in sorted(graph.items()):
        if "jobd.daemon" in deps and name != "jobd.main":
            out.append(f"{name} imports jobd.daemon (only jobd.main may)")
        if name.startswith("jobd_client") and any(d == "jobd" or d.startswith("jobd.") for d in deps):
            out.append(f"{name} imports the daemon package (the client must stand alone)")
        out += _web_problems(name, deps, known[name])
        if name.startswith("jobd.core"):
            out += [f"{name} imports {d} (core/ is pure: no other part of jobd)"
                    for d in sorted(deps) if not d.startswith(CORE_MAY_IMPORT)]
            out += _forbidden_stdlib(name, known[name])
    return out


def _web_problems(name: str, deps: set[str], path: Path) -> list[str]:
    if name == "jobd.web" or name.startswith("jobd.web."):
        return [f"{name} imports {d} (jobd.web talks to the daemon only through jobd_client)"
                for d in sorted(deps) if d.startswith("jobd.") and not d.startswith(WEB_MAY_IMPORT)]
    if not any(d == "jobd.web" or d.startswith("jobd.web.") for d in deps):
        return []
    if name != "jobd.main":
        return [f"{name} imports jobd.web (only jobd.main may, lazily)"]
    top = _top_level_imports(path)
    return [f"{name} imports jobd.web at module level (import it inside a function)"
            for mod in top if mod == "jobd.web" or mod.startswith("jobd.web.")]


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def _forbidden_stdlib(name: str, path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            used.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            used.add(node.module.split(".")[0])
    return [f"{name} imports {m} (core/ does no I/O and no asyncio)"
            for m in sorted(used & set(CORE_FORBIDDEN_STDLIB))]


def main() -> int:
    found = problems()
    for line in found:
        print(line)
    if not found:
        print(f"layers ok: {len(modules())} modules, no cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
