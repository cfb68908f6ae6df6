"""The Python API a notebook uses: the README's example runs as written, and mistakes raise."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from gmm_vae import api
from tests.conftest import ROOT


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- the notebook example.*?-->\n```python\n(.*?)```", text, re.S)
    assert found, "README.md lost its notebook example"
    return found.group(1)


def test_the_readme_notebook_example_runs_as_written(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), scope)
    run, x, again, vae = scope["run"], scope["x"], scope["again"], scope["vae"]
    runs = list(tmp_path.glob("outputs/*/*"))
    assert runs == [tmp_path / run.run_dir]
    assert run.status["status"] == "completed"
    # What the API returns is what the run wrote, and what the command line would read.
    on_disk = json.loads((run.run_dir / "status.json").read_text())
    assert run.status == on_disk
    assert (run.run_dir / ".hydra" / "config.yaml").is_file()
    assert x.shape == (1000, 3) and x.dtype == np.float64 and np.isfinite(x).all()
    assert np.array_equal(run.sample(1000), x)  # seeded
    assert again["checkpoint"] == "best"
    assert json.loads((run.run_dir / "evaluation" / "metrics.json").read_text()) == again
    assert type(vae).__module__ == "gmm_vae.model.vae" and not vae.training
    assert scope["fig"].axes, "the figure has no axes"
    verdict = scope["verdict"]  # the samples judged as samples from anywhere, nothing written
    assert verdict["n_samples"] == 1000 and verdict["coverage"]["n_components"] == 4
    assert "c2st" in verdict and "nll" not in verdict


def test_a_mistake_raises_the_commands_line(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(api.ConfigError, match=r"^data\.n_components must be a positive "
                                              r"integer \(got 0\)$"):
        api.train(["debug=tiny", "data.n_components=0"])
    with pytest.raises(api.ConfigError, match="bogus"):
        api.train(["data.bogus=1"])
    with pytest.raises(api.ConfigError, match=r"not a train\.py run directory"):
        api.load_run(tmp_path)
    assert not (tmp_path / "outputs").exists()


def test_a_run_dir_that_holds_a_run_is_refused_unless_overwritten(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    quick = ["debug=tiny", "analysis.evaluate_at_end=false", "analysis.every_n_epochs=0"]
    first = api.train(quick, run_dir=tmp_path / "run")
    with pytest.raises(api.ConfigError, match="already holds a run"):
        api.train(quick, run_dir=tmp_path / "run")
    second = api.train([*quick, "seed=3"], run_dir=tmp_path / "run", overwrite=True)
    assert second.run_dir == first.run_dir and second.status["status"] == "completed"
    assert first.metrics is None  # no final evaluation asked for
