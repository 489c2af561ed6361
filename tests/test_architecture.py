"""The shape rules of ARCHITECTURE.md, checked: imports flow one way with no cycles (lazy
imports inside functions included), and no function is longer than MAX_FUNCTION_LINES."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("igpo", "harness", "tasks")
MAX_FUNCTION_LINES = 80
"""The longest function, method or nested function, from its `def` line to its last line."""
ALLOWED_LONG: set[str] = set()
"""Functions allowed over MAX_FUNCTION_LINES while being split (none now)."""


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    edges = set()
    for target in found:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name and not name.startswith(target + "."):  # a package's own __init__
            edges.add(target)
    return edges


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_and_igpo_never_imports_harness():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _cycles(graph) == []
    upward = {(a, b) for a, deps in graph.items() if a.startswith("igpo") for b in deps if b.startswith("harness")}
    assert upward == set()


def _unit(module: str, modules: dict[str, Path]) -> str:
    """The sub-package a module belongs to (`harness.eval.run` -> `harness.eval`), or the module
    itself when it sits directly in a top package (`harness.cli`)."""
    parts = module.split(".")
    for depth in range(len(parts), 1, -1):
        name = ".".join(parts[:depth])
        if depth == 2 and modules.get(name, Path()).name == "__init__.py":
            return name
    return ".".join(parts[:2])


def test_no_two_packages_import_each_other():
    """Sub-packages depend one way (eval uses lmeval, ablate and check use eval, never back;
    lazy imports inside functions included): a pair importing each other is one tangle."""
    modules = _modules()
    edges = {
        (_unit(a, modules), _unit(b, modules))
        for a, path in modules.items()
        for b in _imports(a, path, modules)
        if _unit(a, modules) != _unit(b, modules)
    }
    assert sorted((a, b) for a, b in edges if (b, a) in edges and a < b) == []


def test_packages_are_told_apart_from_modules():
    modules = _modules()
    assert _unit("harness.eval.run", modules) == "harness.eval" and _unit("harness.eval", modules) == "harness.eval"
    assert _unit("harness.cli", modules) == "harness.cli" and _unit("igpo.models.files", modules) == "igpo.models"


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _function_lengths(tree: ast.AST, prefix: str = "") -> dict[str, int]:
    """Lines from `def` to the last line of every function in `tree`, by dotted qualified name
    (methods `Class.method`, nested functions `outer.inner`)."""
    out = {}
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[prefix + node.name] = node.end_lineno - node.lineno + 1
            out.update(_function_lengths(node, f"{prefix}{node.name}."))
        elif isinstance(node, ast.ClassDef):
            out.update(_function_lengths(node, f"{prefix}{node.name}."))
        else:
            out.update(_function_lengths(node, prefix))
    return out


def test_no_function_is_over_80_lines():
    """A function reads on one screen: split longer ones into named steps."""
    long = {}
    for path in _modules().values():
        rel = path.relative_to(REPO).as_posix()
        for name, lines in _function_lengths(ast.parse(path.read_text(encoding="utf-8"))).items():
            if lines > MAX_FUNCTION_LINES:
                long[f"{rel}:{name}"] = lines
    assert set(long) - ALLOWED_LONG == set(), {k: v for k, v in long.items() if k not in ALLOWED_LONG}
    assert ALLOWED_LONG - set(long) == set(), "split now: remove from ALLOWED_LONG"


def test_function_lengths_count_methods_and_nested_functions():
    tree = ast.parse("class A:\n    def f(self):\n        def g():\n            pass\n        return g\n")
    assert _function_lengths(tree) == {"A.f": 4, "A.f.g": 2}


MAX_MODULE_LINES = 450
"""The longest module of the parts split by job (MODULE_SIZED), in lines."""
MODULE_SIZED = ("igpo/scoring.py", "igpo/scoring/", "igpo/training/")
"""Where each module stays under MAX_MODULE_LINES: split a longer one by job."""
LONG_MODULES: set[str] = set()
"""Modules allowed over MAX_MODULE_LINES while being split."""


def test_scoring_and_training_modules_are_short():
    """igpo/scoring* and igpo/training/* read one job per module, each under MAX_MODULE_LINES."""
    sizes = {
        rel: len(path.read_text(encoding="utf-8").splitlines())
        for path in _modules().values()
        if (rel := path.relative_to(REPO).as_posix()).startswith(MODULE_SIZED)
    }
    assert {rel.split("/")[1] for rel in sizes} == {"scoring", "training"}  # the check sees both
    long = {rel: lines for rel, lines in sizes.items() if lines >= MAX_MODULE_LINES}
    assert set(long) - LONG_MODULES == set(), {k: v for k, v in long.items() if k not in LONG_MODULES}
    assert LONG_MODULES - set(long) == set(), "split now: remove from LONG_MODULES"


ONE_OWNER = {
    "adapter_config.json": "igpo/models/adapter.py",
    "igpo_checkpoint.json": "igpo/training/checkpoints.py",
}
"""File names every module imports from their one owner (as a string constant, nowhere else)."""
ONE_OWNER_CODE = {
    r"\+ 1\) \* \(\w+ - \w+\)": "igpo/models/logits.py",  # classifier-free guidance's mix
    r"\[:, :1\]|\w+ - 1 : \w+ - 1\]": "igpo/models/logits.py",  # the shifted-logits slice
}
"""Code written once (regex over the source): every other module calls its owner."""
NOT_YET_OWNED: set[tuple[str, str]] = set()
"""(fact, module) pairs still being moved to their owner (none now)."""


def test_one_owner_per_fact():
    import re

    found = set()
    for path in _modules().values():
        rel = path.relative_to(REPO).as_posix()
        text = path.read_text(encoding="utf-8")
        constants = {n.value for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Constant)}
        found |= {(fact, rel) for fact in ONE_OWNER if fact in constants}
        found |= {(pattern, rel) for pattern in ONE_OWNER_CODE if re.search(pattern, text)}
    owners = {**ONE_OWNER, **ONE_OWNER_CODE}
    assert {(fact, owner) for fact, owner in owners.items()} <= found
    strays = {(fact, rel) for fact, rel in found if rel != owners[fact]}
    assert strays - NOT_YET_OWNED == set()
    assert NOT_YET_OWNED - strays == set(), "owned now: remove from NOT_YET_OWNED"


def test_eval_flags_match_decode_config_fields():
    """`igpo eval`'s decoding flags are DecodeConfig's fields (harness.eval.flags makes them):
    each named, typed and documented as its field, booleans as --name/--no-name."""
    from dataclasses import fields

    import typer.main

    from harness.cli import app
    from harness.eval.flags import NOT_CLI, TYPES, flag_fields
    from igpo.decoding import DecodeConfig

    command = typer.main.get_command(app).commands["eval"]
    params = {p.name: p for p in command.params}
    decode = {f.name: f for f in fields(DecodeConfig) if f.name not in NOT_CLI}
    assert set(decode) <= set(params), sorted(set(decode) - set(params))
    docs = {f.name: f.doc for f in flag_fields()}
    for name, field in decode.items():
        option = params[name]
        assert option.opts == ["--" + name.replace("_", "-")] and option.default is None, name
        assert option.help == docs[name] and docs[name], name
        kind = TYPES[field.type.removesuffix(" | None")].__name__
        assert option.type_descriptor.annotation.__name__ == kind, name
        assert option.secondary_opts == (["--no-" + name.replace("_", "-")] if kind == "bool" else []), name


def test_the_arith_canvas_has_one_value():
    """igpo.testbed.TESTBED_DECODE owns igpo_arith's canvas (48 tokens, blocks of 16, 24 steps);
    the shipped protocols (never edited for it: runs record their hashes), the task YAML and the
    tiny recipes declare the same, steps = length where a protocol decodes one token per step."""
    from harness.eval.protocols import available, load_protocol
    from igpo.config import read_yaml_mapping, resolve_recipe
    from igpo.testbed import TESTBED_DECODE as ARITH
    from tasks.registry import task_config

    for name in available():
        [(_, cfg, _)] = load_protocol(name).task_variants("igpo_arith")
        assert (cfg.gen_length, cfg.block_length) == (ARITH.gen_length, ARITH.block_length), name
        assert cfg.steps in (ARITH.steps, ARITH.gen_length), name
    gen = task_config("igpo_arith")["generation_kwargs"]
    assert (gen["max_gen_toks"], gen["block_length"]) == (ARITH.gen_length, ARITH.block_length)
    for recipe in ("igpo_tiny", "grpo_tiny", "igpo_tiny_released"):
        decode = read_yaml_mapping(resolve_recipe(recipe), "recipe")["decode"]
        assert [decode[k] for k in ("gen_length", "block_length", "steps")] == [
            ARITH.gen_length,
            ARITH.block_length,
            ARITH.steps,
        ], recipe
    for recipe in ("sft_tiny", "sft_tiny_sign", "sft_tiny_habit"):
        assert read_yaml_mapping(resolve_recipe(recipe), "recipe")["data"]["max_completion_tokens"] == ARITH.gen_length


def test_gpu_check_runs_on_cpu_at_a_tiny_shape(tmp_path):
    """`igpo bench gpu --shape tiny`: every stage of the GPU check (floors, decoding three ways,
    bf16 numerics, peers, one LoRA step), so it cannot rot unseen."""
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.markdown import cells

    out = tmp_path / "gpu.md"
    result = CliRunner().invoke(app, ["bench", "gpu", "--shape", "tiny", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    rows = [cells(line) for line in text.splitlines() if line.startswith("|")]
    for mode in ("exact", "dual", "dual + graphs"):
        assert any(r[:3] == ["64", "2", mode] and float(r[7]) > 0 for r in rows), mode
    assert "ours, bf16" in text and "log-prob + backward" in text and "Wall time" in text
    fsdp = [r for r in rows if r[0] == "FSDP2"]
    assert fsdp and fsdp[0][1] == "2" and fsdp[0][6] == "groups and rewards equal", text
    from harness.bench.gpu_fsdp import WEIGHT_TOLERANCE

    assert float(fsdp[0][5]) <= WEIGHT_TOLERANCE


def test_gpu_check_writes_each_row_as_it_is_measured(tmp_path):
    """A killed run keeps every finished row: each row is in the file when it is printed."""
    from harness.bench.gpu import GPUBenchConfig, run
    from harness.markdown import cells

    out = tmp_path / "gpu.md"
    seen = []

    def echo(line: str) -> None:
        if line.startswith("| ") and out.exists():
            on_disk = [cells(x) for x in out.read_text().splitlines() if x.startswith("|")]
            seen.append(cells(line) in on_disk)

    cfg = GPUBenchConfig(
        shape="tiny",
        out=out,
        peer=None,
        gen_lengths=(32,),
        batches=(1,),
        prompt_tokens=8,
        block_length=16,
        rl_generations=2,
        rl_gen_length=16,
        lora_r=2,
        fsdp=False,
    )
    run(cfg, echo=echo)
    assert len(seen) >= 6 and all(seen)


def test_gpu_check_refuses_the_8b_shape_without_a_gpu(tmp_path):
    import subprocess
    import sys
    import time

    out = tmp_path / "gpu.md"
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "bench", "gpu", "--out", str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "needs a CUDA GPU" in proc.stderr
    assert not out.exists() and time.perf_counter() - started < 60


def test_readme_is_short_and_every_doc_link_resolves():
    """README.md is for users (under 300 lines); the rest lives in docs/, every relative link
    of README, ARCHITECTURE and docs/ points at a file that exists, and no user-facing text
    speaks of issue numbers."""
    import re

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    assert len(readme.splitlines()) < 300
    pages = [root / "README.md", root / "ARCHITECTURE.md", *sorted((root / "docs").glob("*.md"))]
    assert len(pages) > 5
    for page in pages:
        text = page.read_text()
        assert not re.search(r"\bissues? \d+", text), page.name
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            assert (page.parent / target.split("#")[0]).exists(), f"{page.name}: {target}"


TOP_LEVEL_HARNESS = {"__init__.py", "cli.py", "train_cli.py", "errors.py", "lm_eval.py", "markdown.py"}
"""The only modules directly under harness/ (ARCHITECTURE.md says why each is there)."""


def test_harness_is_laid_out_by_capability():
    modules = {p.name for p in (REPO / "harness").glob("*.py")}
    assert modules <= TOP_LEVEL_HARNESS, sorted(modules - TOP_LEVEL_HARNESS)
    text = (REPO / "ARCHITECTURE.md").read_text()
    assert all(f"`{name}`" in text for name in TOP_LEVEL_HARNESS - {"__init__.py"})
