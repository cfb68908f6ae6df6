"""A fuzzed command line: every override set is accepted and runs, or is refused in one line.

A seeded generator draws override sets over every config group: valid values, values at and
past each bound, wrong types, unknown keys, and spec files that are valid, malformed or
inconsistent. Each set goes through what ``python train.py`` does before training (Hydra's
compose, ``config.validate`` with the memory estimate, ``GMM.from_yaml``), in process for speed.
A refusal must be a ConfigError or a Hydra/OmegaConf error whose one line names a setting of the
set (the one at fault: without it the set no longer fails that way); an acceptance must build
the data module and the model. A few refused sets are then run as real ``python train.py``
commands: exit code 2, the same one stderr line, no traceback, no run directory left.
``FUZZ_SEED=<n>`` replays a failure.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import (
    ConfigCompositionException,
    HydraException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf.errors import OmegaConfBaseException

from gmm_vae.cli import user_error_message
from gmm_vae.config import SEED_MAX, validate
from gmm_vae.data.gmm import GMM
from gmm_vae.errors import ConfigError
from tests.conftest import CONF, run_script

FUZZ_SEED = int(os.environ.get("FUZZ_SEED", "20260415"))
N_CASES = 300
N_SUBPROCESS = 5
# Refused sets re-checked without the settings their message names (each costs a compose).
N_COUNTERFACTUAL = 25
# Small data everywhere, so building an accepted set takes milliseconds.
BASE = ["debug=tiny", "logger.tensorboard=false"]

Gen = Callable[[random.Random], Any]


def ints(minimum: int, valid_max: int, huge: int = 10**12) -> Gen:
    """Valid values, the bound itself, one past it, a large value, wrong types."""
    def gen(r: random.Random) -> Any:
        return r.choice([minimum, minimum + 1, r.randint(minimum, valid_max), valid_max,
                         minimum - 1, -7, huge, "abc", 1.5, "[1]", "null", "true"])
    return gen


def floats(minimum: float, valid_max: float, zero_ok: bool) -> Gen:
    def gen(r: random.Random) -> Any:
        return r.choice([minimum if zero_ok else valid_max / 2, r.uniform(minimum, valid_max),
                         valid_max, 0.0, -1.0, "nan", "inf", 1e300, "abc", "[1]"])
    return gen


def choice(*allowed: Any) -> Gen:
    def gen(r: random.Random) -> Any:
        return r.choice([*allowed, *allowed, "bogus", 3, "null"])
    return gen


def booleans(r: random.Random) -> Any:
    return r.choice([True, False, "maybe", 2])


def seeds(r: random.Random) -> Any:
    return r.choice([0, 1, 42, SEED_MAX, SEED_MAX + 1, -1, -(2**40), 2**64, "abc", 1.5])


def hidden(r: random.Random) -> Any:
    return r.choice(["[16]", "[8,8]", "[32,16,8]", "[]", "[0]", "[16,-1]", "16", "[a]",
                     "[4096,4096]", "null"])


def latent(r: random.Random) -> Any:
    return r.choice([1, 2, 3, 8, 50, 0, -1, "null", "abc", 1.5, 10**9])


SETTINGS: dict[str, Gen] = {
    "data.n_components": ints(1, 12),
    "data.dim": ints(1, 8),
    "data.seed": seeds,
    "data.n_samples": ints(1, 600, huge=2_000_000_000),
    "data.n_val": ints(1, 200, huge=10**11),
    "data.n_test": ints(1, 200, huge=10**11),
    "data.batch_size": ints(1, 100_000, huge=10**9),
    "data.steps_per_call": ints(1, 16),
    "data.mean_spread": floats(0.1, 10.0, zero_ok=False),
    "data.scale_min": floats(0.1, 2.0, zero_ok=False),
    "data.scale_max": floats(0.1, 2.0, zero_ok=False),
    "data.weight_concentration": floats(0.1, 50.0, zero_ok=False),
    "data.min_separation": floats(0.0, 3.0, zero_ok=True),
    "data.normalization": choice("standard", "minmax", "none"),
    "model.latent_dim": latent,
    "model.hidden_dims": hidden,
    "model.likelihood": choice("gaussian", "sigmoid"),
    "model.decoder_covariance": choice("full", "diag"),
    "model.mse_reduction": choice("sum", "mean"),
    "model.prior": choice("standard", "mog", "flow"),
    "model.prior_components": ints(1, 64, huge=10**7),
    "model.flow_transforms": ints(1, 3),
    "model.flow_hidden": ints(1, 32),
    "model.beta": floats(0.0, 4.0, zero_ok=True),
    "model.kl_warmup_epochs": ints(0, 20),
    "model.prior_refit_every": ints(0, 5),
    "model.free_bits": floats(0.0, 1.0, zero_ok=True),
    "model.lr": floats(1e-5, 1e-1, zero_ok=False),
    "model.weight_decay": floats(0.0, 1e-2, zero_ok=True),
    "model.lr_schedule": choice("none", "cosine"),
    "trainer.max_epochs": ints(1, 5),
    "callbacks.progress_refresh_rate": ints(0, 20),
    "callbacks.checkpoint": booleans,
    "logger.tensorboard": booleans,
    "analysis.every_n_epochs": ints(0, 5),
    "analysis.tsne_every_n_epochs": ints(0, 5),
    "analysis.tsne_points": ints(1, 500),
    "analysis.n_samples": ints(1, 500, huge=10**11),
    "analysis.k_max": ints(2, 10),
    "analysis.cluster_criterion": choice("silhouette", "bic", "elbow"),
    "analysis.hist_bins": ints(1, 60),
    "analysis.peak_height": floats(0.0, 1.0, zero_ok=True),
    "analysis.peak_distance": ints(1, 5),
    "analysis.hq_threshold": floats(0.5, 5.0, zero_ok=False),
    "analysis.min_share": floats(0.0, 0.1, zero_ok=True),
    "analysis.iwae_samples": ints(1, 64, huge=10**9),
    "analysis.evaluate_at_end": booleans,
    "analysis.eval_samples": ints(1, 2_000, huge=10**11),
    "analysis.coverage_samples": ints(1, 5_000, huge=10**11),
    "seed": seeds,
}
UNKNOWN = ["data.bogus=1", "model.hidden=3", "trainer.max_epoch=2", "analysis.k=3",
           "nosuchgroup=1", "experiment=nope", "debug=nope", "data=nope", "+data.extra=1",
           "model.prior_components==3", "data.n_samples"]

SPEC_OK = ("means: [[0, 0], [4, 4]]\ncovariances: [[[1, 0], [0, 1]], [[1, 0], [0, 1]]]\n"
           "weights: [0.5, 0.5]\n")
SPECS = {
    "valid": SPEC_OK,
    "valid_3d": "means: [[0, 0, 0]]\ncovariances: [[[1, 0, 0], [0, 2, 0], [0, 0, 1]]]\n"
                "weights: [1.0]\n",
    "malformed": "means: [[0, 0]\n",
    "not_a_mapping": "- 1\n- 2\n",
    "weights_sum": SPEC_OK.replace("0.5, 0.5", "0.5, 0.6"),
    "not_spd": SPEC_OK.replace("[[1, 0], [0, 1]]]", "[[1, 2], [2, 1]]]"),
    "asymmetric": SPEC_OK.replace("[[1, 0], [0, 1]]]", "[[1, 0.5], [0, 1]]]"),
    "shapes": SPEC_OK.replace("[[1, 0], [0, 1]]]", "[[1, 0, 0]]]"),
    "missing_key": "means: [[0, 0]]\nweights: [1.0]\n",
    "negative_weight": SPEC_OK.replace("0.5, 0.5", "1.5, -0.5"),
    "nan": SPEC_OK.replace("[4, 4]", "[.nan, 4]"),
    "empty": "",
}
# What a refusal may be: the package's own error or Hydra/OmegaConf's, never a stray exception.
REFUSAL_TYPES = (ConfigError, HydraException, OmegaConfBaseException)


def draw_case(r: random.Random, spec_dir: Path) -> list[str]:
    """One override set: 1-4 settings, sometimes an unknown key or a spec file."""
    keys = r.sample(sorted(SETTINGS), r.randint(1, 4))
    overrides = [f"{k}={SETTINGS[k](r)}" for k in keys]
    if r.random() < 0.12:
        overrides.append(r.choice(UNKNOWN))
    if r.random() < 0.2:
        name = r.choice([*SPECS, "missing_file"])
        overrides.append(f"data.spec_path={spec_dir / (name + '.yaml')}")
    return overrides


def check(overrides: list[str]) -> tuple[str, str | None, type | None]:
    """("accepted", None, None) or ("refused", message, exception type), as train.py would
    decide before training."""
    from gmm_vae.runs.pipeline import build_datamodule, build_model

    try:
        cfg = compose(config_name="train", overrides=[*BASE, *overrides])
        validate(cfg)
        if cfg.data.spec_path:
            GMM.from_yaml(cfg.data.spec_path)
    except Exception as exc:  # what the CLI would print, or None for a bug
        message = user_error_message(exc) or f"BUG {type(exc).__name__}: {exc}"
        return "refused", message, type(exc)
    # Accepted means it will run: the data module and the model build.
    dm = build_datamodule(cfg)
    build_model(cfg, dm)
    return "accepted", None, None


def override_key(override: str) -> str:
    """``data.dim`` of ``data.dim=3``, ``+data.extra=1`` or ``experiment`` of ``experiment=x``."""
    return override.split("=", 1)[0].lstrip("+~")


def named_settings(message: str, overrides: list[str]) -> list[str]:
    """The overridden keys ``message`` names, each as a whole dotted name: ``model.hidden`` is
    not named by a message about ``model.hidden_dims``, nor the group ``data`` by one about
    ``data.dim``. Hydra prints a group as ``'data/nope'`` and an unknown key in full
    (``data.bogus: Key 'bogus' not in 'DataConfig'``); a spec file's errors name
    ``data.spec_path``, itself an overridden key."""
    keys = dict.fromkeys(override_key(o) for o in overrides)
    return [k for k in keys if re.search(rf"(?<![\w.]){re.escape(k)}(?!\w|\.\w)", message)]


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("specs")
    for name, text in SPECS.items():
        (path / f"{name}.yaml").write_text(text)
    return path


@pytest.fixture(scope="module")
def fuzz_results(spec_dir: Path) -> list[tuple[list[str], str, str | None, type | None]]:
    r = random.Random(FUZZ_SEED)
    results = []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for _ in range(N_CASES):
            overrides = draw_case(r, spec_dir)
            try:
                verdict, message, error = check(overrides)
            except Exception as exc:  # accepted but would not run
                verdict, message, error = "crashed", f"{type(exc).__name__}: {exc}", type(exc)
            results.append((overrides, verdict, message, error))
    return results


def test_every_fuzzed_override_set_runs_or_is_refused_in_one_line(
        fuzz_results: list[tuple[list[str], str, str | None, type | None]]) -> None:
    bad = []
    blamed: list[tuple[list[str], list[str], str]] = []
    for overrides, verdict, message, error in fuzz_results:
        if verdict == "crashed":
            bad.append(f"accepted but failed to build: {overrides}: {message}")
        elif verdict == "refused":
            assert message is not None and error is not None
            named = named_settings(message, overrides)
            if not issubclass(error, REFUSAL_TYPES):
                bad.append(f"refused by a stray {error.__name__}: {overrides}: {message!r}")
            elif message.startswith("BUG") or "\n" in message:
                bad.append(f"refused without a one-line message: {overrides}: {message!r}")
            elif not named:
                bad.append(f"refused naming none of its settings: {overrides}: {message!r}")
            elif named:
                blamed.append((overrides, named, message))
    assert not bad, f"FUZZ_SEED={FUZZ_SEED}: {len(bad)} of {len(fuzz_results)} cases:\n" + \
        "\n".join(bad[:20])
    kinds = {v for _, v, _, _ in fuzz_results}
    assert kinds == {"accepted", "refused"}, f"FUZZ_SEED={FUZZ_SEED}: the draw is one-sided"
    # Every kind of refusal was met: the schema's and validate's ConfigErrors, a spec file's,
    # Hydra's unparsable override, missing config option and rejected value.
    errors = {e for _, v, _, e in fuzz_results if v == "refused"}
    for kind in (ConfigError, OverrideParseException, MissingConfigException,
                 ConfigCompositionException):
        assert kind in errors, f"FUZZ_SEED={FUZZ_SEED}: no refusal by {kind.__name__}"
    assert any(m.startswith("data.spec_path") for _, _, m in blamed), FUZZ_SEED
    # The setting a message names is the one at fault: without it the set passes, or fails
    # with another message. (A message naming a bystander keeps failing the same way.)
    wrong = []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for overrides, named, message in blamed[:N_COUNTERFACTUAL]:
            rest = [o for o in overrides if override_key(o) not in named]
            if check(rest)[1] == message:
                wrong.append(f"{overrides}: {message!r} still refused without {named}")
    assert not wrong, f"FUZZ_SEED={FUZZ_SEED}:\n" + "\n".join(wrong)


def test_refused_fuzzed_sets_fail_the_real_command_in_one_line(
        tmp_path: Path,
        fuzz_results: list[tuple[list[str], str, str | None, type | None]]) -> None:
    refused = [(o, m) for o, v, m, _ in fuzz_results if v == "refused"]
    r = random.Random(FUZZ_SEED)
    for i, (overrides, message) in enumerate(r.sample(refused, min(N_SUBPROCESS, len(refused)))):
        run_dir = tmp_path / f"run{i}"
        proc = run_script("train.py", [*BASE, *overrides, f"hydra.run.dir={run_dir}"],
                          cwd=tmp_path, timeout=120)
        where = f"FUZZ_SEED={FUZZ_SEED} {overrides}"
        assert proc.returncode == 2, f"{where}: {proc.stderr[-1500:]}"
        err = proc.stderr.strip()
        assert "Traceback" not in err and "\n" not in err and err.startswith("error: "), \
            f"{where}: {err}"
        # The same line as in process; a memory refusal's figures move with what is free.
        assert message is not None
        if "is too large for the memory available" in message:
            assert err.startswith(f"error: {message.split(' this run needs')[0]}"), \
                f"{where}: {err}"
        else:
            assert err == f"error: {message}", f"{where}: {err}"
        assert not run_dir.exists(), f"{where}: a refused run left {run_dir}"


def test_the_fuzz_draws_every_group_and_error_kind(spec_dir: Path) -> None:
    """The generator reaches every setting, every unknown key and every spec file (the missing
    one too) in N_CASES."""
    r = random.Random(FUZZ_SEED)
    seen: set[str] = set()
    for _ in range(N_CASES):
        for o in draw_case(r, spec_dir):
            seen.update((o, o.split("=", 1)[0]))
            if "spec_path=" in o:
                seen.add(Path(o.split("=", 1)[1]).stem)
    missing = (set(SETTINGS) | set(SPECS) | set(UNKNOWN) | {"missing_file"}) - seen
    assert not missing, f"FUZZ_SEED={FUZZ_SEED}: never drawn: {sorted(missing)}"
