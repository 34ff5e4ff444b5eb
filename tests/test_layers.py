"""Layers point one way: CLI → pipeline runner (tru.kfp) → library steps (tru.steps) → MLOps services
(tru.mlops) → core (data, models, train, eval, forget, unlearn, certify, checkpoint, serving,
lifecycle). Read from the source (every import statement, also inside functions), so a lazy import that
breaks the rule is caught too."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tru"
ORDER = ["cli", "kfp", "steps", "mlops", "core"]  # a layer may import only the layers after it
LAYER_OF = {
    "cli": "cli", "__main__": "cli", "commands": "cli", "kfp": "kfp", "steps": "steps", "mlops": "mlops",
}  # fmt: skip


def layer(module: str) -> str:
    parts = module.split(".")
    return LAYER_OF.get(parts[1], "core") if len(parts) > 1 and parts[0] == "tru" else "outside"


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if node.module == "tru"}
    return {m for m in found if m == "tru" or m.startswith("tru.")}


def test_every_import_points_down_the_layers() -> None:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        module = "tru." + ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        mine = layer(module)
        for dep in imports(path):
            theirs = layer(dep)
            if theirs != "outside" and theirs != mine and ORDER.index(theirs) < ORDER.index(mine):
                bad.append(f"{module} ({mine}) imports {dep} ({theirs})")
    assert not bad, "\n".join(bad)


def test_only_the_cli_imports_the_cli() -> None:
    offenders = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if layer("tru." + ".".join(p.relative_to(SRC).with_suffix("").parts)) != "cli"
        and any(d.startswith(("tru.commands", "tru.cli")) for d in imports(p))
    ]
    assert offenders == []
