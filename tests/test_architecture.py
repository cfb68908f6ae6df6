"""The package's modules depend on each other in one direction (STYLE: "Dependencies point one
way"): a cycle means two jobs share a module, and an upgrade or a refactor then breaks both."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gmm_vae"
# The wings in the order data flows: a module may import its own wing and those before it.
# "base" is the top-level modules (config, errors, io, values, shapes, chunks, machine,
# resources); "entry" the cli and api.
WINGS = ("base", "data", "model", "analysis", "runs", "entry")
ENTRY = {"cli", "api"}


def module_name(path: Path) -> str:
    """``runs.pipeline`` for gmm_vae/runs/pipeline.py, ``config`` for gmm_vae/config.py."""
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def wing(module: str) -> str:
    if "." in module:
        return module.split(".")[0]
    return "entry" if module in ENTRY else "base"


def module_path(module: str) -> Path:
    return PACKAGE.joinpath(*module.split(".")).with_suffix(".py")


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports, at top level or inside a function."""
    modules = {module_name(p) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for m in modules:
        for node in ast.walk(ast.parse(module_path(m).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[0] != "gmm_vae":
                    continue
                prefix = ".".join(parts[1:])
                if prefix in modules:
                    graph[m].add(prefix)
                for alias in node.names:  # from gmm_vae.runs import pipeline
                    name = f"{prefix}.{alias.name}" if prefix else alias.name
                    if name in modules:
                        graph[m].add(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_package_imports_have_no_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_imports_point_one_way_between_the_wings() -> None:
    """data -> model -> analysis -> runs -> entry: no module imports a later wing."""
    graph = import_graph()
    assert {wing(m) for m in graph} == set(WINGS), sorted(graph)
    for module, imports in graph.items():
        for other in imports:
            assert WINGS.index(wing(other)) <= WINGS.index(wing(module)), (module, other)


def test_the_wing_check_sees_an_import_against_the_flow() -> None:
    assert WINGS.index(wing("runs.pipeline")) > WINGS.index(wing("analysis.metrics"))
    assert wing("cli") == "entry" and wing("config") == "base"


def test_lower_layers_never_import_the_cli_or_pipeline() -> None:
    graph = import_graph()
    for low in ("analysis.report", "analysis.evaluation", "analysis.metrics", "runs.callbacks",
                "analysis.callbacks", "model.vae", "data.datamodule", "data.gmm",
                "runs.summarize", "runs.sweep_jobs", "runs.summary_tables",
                "runs.summary_figures", "analysis.registry"):
        assert not graph[low] & {"cli", "runs.pipeline", "runs.rerun"}, (low, graph[low])


def test_the_metric_registry_reads_nothing_of_its_readers() -> None:
    """Summary, report, callbacks, pipeline and benchmarks read the registry; it reads nothing
    of theirs (STYLE: "One registry for anything listed in several places")."""
    graph = import_graph()
    assert graph["analysis.registry"] <= {"io", "errors", "values"}, graph["analysis.registry"]
    for reader in ("runs.sweep_jobs", "runs.summary_tables", "analysis.report",
                   "analysis.callbacks", "runs.pipeline"):
        assert "analysis.registry" in graph[reader], reader


def test_the_evaluation_takes_the_plain_vae_not_the_training_module() -> None:
    graph = import_graph()
    for low in ("model.vae", "analysis.evaluation", "analysis.report", "analysis.metrics",
                "analysis.plots"):
        assert "model.training" not in graph[low], (low, graph[low])


def imported_names(module: str) -> set[str]:
    """Every top-level package ``module`` (a file of gmm_vae) imports, anywhere in the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(module_path(module).read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_the_model_does_not_import_lightning() -> None:
    """The VAE is a plain torch module (STYLE, "A model you can hold in one hand"); the
    LightningModule that trains it is ``training.VAEModule``."""
    names = imported_names("model.vae")
    assert "torch" in names  # the walk sees the file's imports
    assert not names & {"lightning", "pytorch_lightning"}, names
    assert "lightning" in imported_names("model.training")
    # Nor does any module it imports, directly or through others.
    graph, seen, todo = import_graph(), set(), ["model.vae"]
    while todo:
        module = todo.pop()
        seen.add(module)
        assert not imported_names(module) & {"lightning", "pytorch_lightning"}, module
        todo.extend(graph[module] - seen)


PLAIN_USE = """
import dataclasses
import sys

import torch

from gmm_vae.model.vae import VAE

torch.manual_seed(0)
gen = torch.Generator().manual_seed(1)
centres = torch.tensor([[-3.0, 0.0], [3.0, 0.0]])
x = centres[torch.randint(0, 2, (512,), generator=gen)] + 0.3 * torch.randn(512, 2, generator=gen)
vae = VAE(data_dim=2, latent_dim=2, hidden_dims=[32, 32], prior="mog", prior_components=4,
          decoder_covariance="full", data_shift=[0.0, 0.0], data_scale=[3.0, 0.3])
xn = vae.normalize(x)
opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
losses = []
for step in range(60):
    terms = vae.loss_terms(xn[(step % 4) * 128:(step % 4 + 1) * 128])
    opt.zero_grad()
    terms["loss"].backward()
    opt.step()
    losses.append(float(terms["loss"]))
assert set(terms) == {"loss", "recon", "kl"}
assert sum(losses[-4:]) < sum(losses[:4]), losses
vae.eval()
samples = vae.sample(1000)
assert samples.shape == (1000, 2) and torch.isfinite(samples).all()
assert samples[:, 0].abs().mean() > 1.0  # in data units: the two centres are at x = -3, 3
log_p = vae.log_prob(x[:100], k=16)
assert log_p.shape == (100,) and torch.isfinite(log_p).all()
codes = vae.embed(x[:100])
assert codes.shape == (100, 2)
# The config is a record of the arguments: it rebuilds the same architecture.
rebuilt = VAE(**dataclasses.asdict(vae.config))
assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
    k: v.shape for k, v in vae.state_dict().items()}
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning"))
assert not loaded, loaded
print("ok")
"""


def test_the_plain_vae_trains_samples_and_scores_without_lightning() -> None:
    """Build, a few Adam steps on ``loss_terms``, ``sample``, ``log_prob``, ``embed``: in a
    fresh interpreter in which Lightning is never imported."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", PLAIN_USE], capture_output=True, text=True,
                          timeout=120, check=False, cwd=PACKAGE.parent)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
