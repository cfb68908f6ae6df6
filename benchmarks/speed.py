"""Speed benchmark: the project's Lightning training vs a raw PyTorch loop, analysis on vs off.

    python benchmarks/speed.py [--epochs 20] [--repeats 3] [--threads N] [--analysis-epochs 500]
                               [--recipe-epochs 300 [--recipe-pairs 2]] [--scale]
                               [--sweep-epochs 150] [hydra overrides ...]
    python benchmarks/speed.py --cost-epochs 60 [--cost-repeats 2] [--cost-rows K=4,K=50]
                               [--cost-cpu]
    python benchmarks/speed.py --gpu [--gpu-sweep 4] [--run-epochs 300]

``--gpu`` and ``--gpu-sweep N`` (a machine with a CUDA GPU) time whole ``train.py`` runs instead,
each in its own process: the default run on the GPU with CUDA graphs, on the GPU with the eager
step, and on one CPU core of the same machine (``torch_threads=1``), training and final
evaluation separately (``status.json``); and N default runs at once on the one GPU
(``hydra/launcher=local_parallel``) against one run alone.

Everything runs in one process, so the ratios compare like with like on whatever machine runs
it. Part 1 times per-step training: the project's ``trainer.fit`` (data module, model, logging,
progress bar) and a plain loop over in-memory tensors (permute, slice, forward, backward, Adam)
on the same model, data and batch size. After a warm-up epoch, every Lightning step (8
optimiser steps) is followed by 8 raw steps, and the ratio is total Lightning time over total
raw time across these pairs: a shared machine's speed drifts within seconds, and pairing
cancels the drift that made ratios of separate runs swing between 1.0 and 1.4. Part 2 times a
default ``train.py`` run with analysis on vs off; ``--recipe-epochs`` a default run against
the same run with the recipe before issue 13 (``EARLIER_RECIPE``); ``--scale`` and
``--sweep-epochs`` add data size and joblib sweeps. The last line is ``lightning/raw ratio: X.XX``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing: benchmarks are scripts

from hydra import compose, initialize_config_dir  # noqa: E402

from gmm_vae.analysis.callbacks import AnalysisCallback, TSNECallback  # noqa: E402
from gmm_vae.runs.callbacks import build_callbacks  # noqa: E402
from gmm_vae.runs.pipeline import (  # noqa: E402
    build_datamodule,
    build_model,
    build_trainer,
    quiet_lightning,
    train,
)

# Training only: no validation, checkpoints or analysis (the raw loop has none of them).
BASE = ["trainer.accelerator=cpu", "trainer.limit_val_batches=0", "callbacks.checkpoint=false",
        "analysis.every_n_epochs=0", "analysis.tsne_every_n_epochs=0",
        "analysis.evaluate_at_end=false"]


# The default recipe before issue 13 (no warm-up, no variance cap, latent D - 1, no prior refit):
# the baseline a default run's wall time is held to (at most 1.3x).
EARLIER_RECIPE = ["model.kl_warmup_epochs=0", "model.decoder_var_warmup_epochs=0",
                  "model.decoder_init_log_var=0", "model.latent_dim=2",
                  "model.prior_refit_every=0", "model.decoder_covariance=diag"]


def compose_cfg(overrides: list[str]):  # type: ignore[no-untyped-def]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


class RawLoop:
    """A plain PyTorch loop over in-memory tensors: permute, slice, forward, backward, Adam."""

    def __init__(self, cfg) -> None:  # type: ignore[no-untyped-def]
        dm = build_datamodule(cfg)
        module = build_model(cfg, dm)
        self.vae, self.kl_weight = module.vae, module.kl_weight()
        self.opt = module.configure_optimizers()  # the same (fused) Adam Lightning uses
        self.data, self.batch_size = dm.t_train, int(cfg.data.batch_size)
        self.batches: list[torch.Tensor] = []

    def run(self, steps: int) -> float:
        """Seconds taken by the next ``steps`` optimiser steps (a new epoch when one ends)."""
        start = time.perf_counter()
        for _ in range(steps):
            if not self.batches:
                perm = self.data[torch.randperm(len(self.data))]
                self.batches = list(perm.split(self.batch_size))[::-1]
            batch = self.batches.pop()
            loss = self.vae.loss_terms(batch, self.kl_weight)["loss"]
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return time.perf_counter() - start


class PairedTimer(L.Callback):
    """Times every Lightning step, each followed by as many optimiser steps of the raw loop.

    Each pair sees the same state of the machine: on a shared host whose speed drifts by ±20%
    within seconds, totals over many short pairs compare like with like where two separate
    runs do not. A Lightning window spans whatever Lightning does between steps and epochs
    (hooks, logging, progress bar, epoch-end work, the scheduler); the raw window does not.
    """

    def __init__(self, raw: RawLoop, skip: int) -> None:
        self.raw, self.skip = raw, skip
        self.calls = 0
        self.start: tuple[float, int] | None = None
        self.lightning: list[float] = []  # seconds per optimiser step, per window
        self.plain: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: object, batch_idx: int) -> None:
        now, step = time.perf_counter(), int(trainer.global_step)
        self.calls += 1
        if self.calls <= self.skip:
            return
        if self.start is not None and step > self.start[1]:
            steps = step - self.start[1]
            self.lightning.append((now - self.start[0]) / steps)
            self.plain.append(self.raw.run(steps) / steps)
        self.start = (time.perf_counter(), step)


def paired_fit(cfg, epochs: int, raw_cfg=None) -> PairedTimer:  # type: ignore[no-untyped-def]
    """The project's ``trainer.fit`` (no validation), timed in windows paired with a raw loop.

    The raw loop trains on ``raw_cfg`` (default: the same config); a fixed raw loop is the
    yardstick that compares two Lightning runs made minutes apart. The first 10 Lightning
    steps (one epoch at 10k points) are warm-up; the raw loop warms up as long before.
    """
    L.seed_everything(0, verbose=False)
    dm = build_datamodule(cfg)
    model = build_model(cfg, dm)
    plain = RawLoop(cfg if raw_cfg is None else raw_cfg)
    skip = 10
    plain.run(skip * cfg.data.steps_per_call)
    timer = PairedTimer(plain, skip=skip)
    with tempfile.TemporaryDirectory() as tmp:
        callbacks = [c for c in build_callbacks(cfg, Path(tmp))
                     if type(c).__name__ in ("TQDMProgressBar", "NaNGuard", "RNGState")]
        trainer = build_trainer(cfg, Path(tmp), [*callbacks, timer])
        trainer.fit_loop.max_epochs = epochs
        trainer.fit(model, datamodule=dm)
    return timer


def _sweep(extra: list[str], epochs: int) -> float:
    """Wall time of ``python train.py -m seed=1,2 ...`` (2 jobs), without final evaluation."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "train.py"), "-m", "seed=1,2",
               f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false",
               "trainer.accelerator=cpu",
               "analysis.every_n_epochs=0", "analysis.tsne_every_n_epochs=0",
               "analysis.evaluate_at_end=false", f"hydra.sweep.dir={tmp}/sweep", *extra]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=tmp, check=True, capture_output=True)
        return time.perf_counter() - start


def sweep_ratio(epochs: int) -> None:
    """Sequential (basic launcher, best of default and 1 thread) vs joblib with 2 jobs."""
    seq_default = _sweep([], epochs)
    seq_one = _sweep(["torch_threads=1"], epochs)
    par = _sweep(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], epochs)
    seq = min(seq_default, seq_one)
    print(f"2-job sweep, {epochs} epochs each: one after another {seq:.1f} s "
          f"(default threads {seq_default:.1f} s, 1 thread {seq_one:.1f} s), "
          f"joblib n_jobs=2 {par:.1f} s")
    print(f"joblib speed-up: {seq / par:.2f}x")


def _run(overrides: list[str], tmp: Path, multirun: bool = False) -> tuple[float, list[dict]]:
    """Wall seconds of ``python train.py <overrides>`` and the status.json of each of its runs."""
    where = (["-m", f"hydra.sweep.dir={tmp}/sweep"] if multirun
             else [f"hydra.run.dir={tmp}/run"])
    cmd = [sys.executable, str(ROOT / "train.py"), *where, "trainer.enable_progress_bar=false",
           *overrides]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd[1:])} failed:\n{proc.stderr[-2000:]}")
    statuses = [json.loads(f.read_text()) for f in sorted(tmp.rglob("status.json"))]
    return wall, statuses


def _times(status: dict) -> str:
    return (f"training {status['train_time_s']:.1f} s, evaluation {status['eval_time_s']:.1f} s "
            f"(total {status['wall_time_s']:.1f} s)")


def require_cuda(flag: str) -> None:
    """Exit with one line when there is no GPU to measure."""
    if not torch.cuda.is_available():
        sys.exit(f"error: {flag} needs a CUDA GPU, and torch.cuda.is_available() is False here "
                 f"(torch {torch.__version__})")


def gpu_vs_cpu(epochs: int) -> None:
    """The default run, each setting in a fresh process: GPU graphed, GPU eager, one CPU core."""
    settings = {
        "GPU, CUDA graphs": ["trainer.accelerator=gpu", "trainer.devices=1"],
        "GPU, eager step": ["trainer.accelerator=gpu", "trainer.devices=1",
                            "model.cuda_graphs=false"],
        "CPU, 1 core": ["trainer.accelerator=cpu", "torch_threads=1"],
    }
    print(f"default run, {epochs} epochs, on {torch.cuda.get_device_name(0)} and one CPU core")
    results = {}
    for label, extra in settings.items():
        with tempfile.TemporaryDirectory() as tmp:
            _, (status,) = _run([f"trainer.max_epochs={epochs}", *extra], Path(tmp))
        results[label] = status
        print(f"{label:18s} {_times(status)}")
    cpu = results["CPU, 1 core"]
    for label in ("GPU, CUDA graphs", "GPU, eager step"):
        gpu = results[label]
        print(f"{label}: training {cpu['train_time_s'] / gpu['train_time_s']:.2f}x faster "
              f"than one CPU core, evaluation {cpu['eval_time_s'] / gpu['eval_time_s']:.2f}x")


def gpu_sweep(n_jobs: int, epochs: int) -> None:
    """N default runs at once on one GPU vs one run alone: how many jobs per GPU pay off."""
    common = [f"trainer.max_epochs={epochs}", "trainer.accelerator=gpu", "trainer.devices=1"]
    with tempfile.TemporaryDirectory() as tmp:
        one, _ = _run(common, Path(tmp))
    seeds = ",".join(str(i) for i in range(1, n_jobs + 1))
    with tempfile.TemporaryDirectory() as tmp:
        par, statuses = _run([*common, f"seed={seeds}", "hydra/launcher=local_parallel",
                              f"hydra.launcher.n_jobs={n_jobs}"], Path(tmp), multirun=True)
    train = statistics.fmean(s["train_time_s"] for s in statuses)
    print(f"one run alone: {one:.1f} s wall; {n_jobs} runs at once on one GPU: {par:.1f} s wall "
          f"(mean training {train:.1f} s per run)")
    print(f"{n_jobs}-job GPU sweep throughput: {n_jobs * one / par:.2f}x one job at a time")


def timed_train(overrides: list[str]) -> float:
    """Wall seconds of one in-process ``train()`` of a default run on the CPU, without a
    progress bar, plus ``overrides`` (in a temporary run dir)."""
    over = ["trainer.accelerator=cpu", "trainer.enable_progress_bar=false", *overrides]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train(compose_cfg(over), Path(tmp))
        return time.perf_counter() - start


def recipe_cost(epochs: int, pairs: int) -> None:
    """A default train.py run (analysis and final evaluation on) vs the same run with the
    earlier recipe and with the diagonal p(x|z) (the full covariance's own cost), alternated
    ``pairs`` times so that a drifting machine hits all alike."""
    runs = (("earlier", EARLIER_RECIPE), ("diagonal head", ["model.decoder_covariance=diag"]),
            ("default", []))
    totals = dict.fromkeys((label for label, _ in runs), 0.0)
    for _ in range(pairs):
        for label, extra in runs:
            totals[label] += timed_train([f"trainer.max_epochs={epochs}", *extra])
    print(f"train.py {epochs} epochs x {pairs}: " + ", ".join(
        f"{label} {seconds:.1f} s" for label, seconds in totals.items()))
    print(f"default/diagonal-head ratio: {totals['default'] / totals['diagonal head']:.2f}")
    print(f"default/earlier recipe ratio: {totals['default'] / totals['earlier']:.2f}")


# The mixtures of the cost table (issue 23): K grows in 3-D (rows K=...), then D grows at
# K = 8 (rows D=...). Names without commas: --cost-rows is a comma-separated list of them.
COST_ROWS: dict[str, list[str]] = {
    "K=4": ["data.n_components=4", "data.dim=3"],
    "K=16": ["data.n_components=16", "data.dim=3"],
    "K=50": ["data.n_components=50", "data.dim=3"],
    "D=3": ["data.n_components=8", "data.dim=3"],
    "D=10": ["data.n_components=8", "data.dim=10"],
    "D=20": ["data.n_components=8", "data.dim=20"],
    "D=50": ["data.n_components=8", "data.dim=50"],
}
DEFAULT_EPOCHS, DEFAULT_EVERY, DEFAULT_TSNE_EVERY = 300, 50, 250


class StageClock:
    """Seconds spent in the analysis callbacks' epoch-end hooks and in the final evaluation
    (``report.write_evaluation``), summed over a run, on ``clock``.

    The hooks are wrapped on the classes and the module for the clock's lifetime, so the run
    itself (built by ``train``) is the unchanged default; training is the rest of the run.
    ``time.process_time`` (CPU seconds of this process; the runs are single-threaded) reads the
    same on a machine that other jobs share, where wall seconds drift by 2-3x within minutes.
    """

    def __init__(self, clock: Any = time.perf_counter) -> None:
        self.clock = clock
        self.seconds = {"analysis": 0.0, "evaluation": 0.0, "fit": 0.0}
        self._saved: list[tuple[Any, str, Any]] = []

    def _wrap(self, owner: Any, name: str, stage: str) -> None:
        inner = getattr(owner, name)
        self._saved.append((owner, name, inner))

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = self.clock()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[stage] += self.clock() - start

        setattr(owner, name, timed)

    def __enter__(self) -> StageClock:
        from gmm_vae.analysis import report

        for cls in (AnalysisCallback, TSNECallback):
            self._wrap(cls, "on_train_epoch_end", "analysis")
        self._wrap(report, "write_evaluation", "evaluation")
        self._wrap(L.Trainer, "fit", "fit")  # its analysis hooks included
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, inner in reversed(self._saved):
            setattr(owner, name, inner)


def cost_run(mixture: list[str], epochs: int, clock: Any = time.perf_counter
             ) -> dict[str, float]:
    """One default run of ``epochs`` on ``mixture`` (analysis on, cadence scaled to a 300-epoch
    run's; one thread, as the issue's measurements): seconds of training, analysis callbacks
    and final evaluation on ``clock``, and what a 300-epoch run would take: the set-up (data,
    model, trainer) once, the epochs scaled, the same number of analyses and one evaluation."""
    scale = epochs / DEFAULT_EPOCHS
    over = ["trainer.accelerator=cpu", "torch_threads=1", "trainer.enable_progress_bar=false",
            f"trainer.max_epochs={epochs}",
            f"analysis.every_n_epochs={max(1, round(DEFAULT_EVERY * scale))}",
            f"analysis.tsne_every_n_epochs={max(1, round(DEFAULT_TSNE_EVERY * scale))}",
            *mixture]
    with tempfile.TemporaryDirectory() as tmp, StageClock(clock) as stages:
        start = clock()
        train(compose_cfg(over), Path(tmp))
        total = clock() - start
    t = stages.seconds
    epochs_s = t["fit"] - t["analysis"]
    setup = total - t["fit"] - t["evaluation"]
    out = {"training": setup + epochs_s, "analysis": t["analysis"],
           "evaluation": t["evaluation"], "wall": total}
    out["wall_300"] = setup + epochs_s / scale + t["analysis"] + t["evaluation"]
    return out


def cost_table(epochs: int, repeats: int, rows: list[str], cpu: bool = False) -> None:
    """The cost table: every row ``repeats`` times, interleaved (a drifting machine hits all
    alike), the fastest of each row's repeats per stage, ratios to the K = 4 row; CPU seconds
    with ``cpu`` (robust on a shared machine), wall seconds otherwise."""
    clock = time.process_time if cpu else time.perf_counter
    rows = ["K=4", *[r for r in rows if r != "K=4"]]
    # A discarded run first: the first one pays the process's one-off imports and warm-up
    # (scikit-learn, openTSNE, POT, torch kernels), which made K = 4 look dearer than K = 8.
    cost_run(COST_ROWS["K=4"], epochs, clock)
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeats):
        for row in rows:
            times = cost_run(COST_ROWS[row], epochs, clock)
            best[row] = {k: min(v, best.get(row, times)[k]) for k, v in times.items()}
    base = best["K=4"]
    print(f"cost table: default runs, {epochs} epochs standing for {DEFAULT_EPOCHS} (analysis "
          f"cadence scaled), best of {repeats}, threads {torch.get_num_threads()}; "
          f"{'CPU' if cpu else 'wall'} seconds (ratio to K=4)")
    print("| mixture | training | analysis callbacks | final evaluation | total | "
          f"wall at {DEFAULT_EPOCHS} epochs |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        t = best[row]
        cells = " | ".join(f"{t[k]:.1f} ({t[k] / max(base[k], 1e-9):.2f}x)"
                           for k in ("training", "analysis", "evaluation", "wall", "wall_300"))
        print(f"| {row} | {cells} |")
    if "K=50" in best:
        print(f"K=50/K=4 {'CPU' if cpu else 'wall'} ratio: "
              f"{best['K=50']['wall'] / base['wall']:.2f} "
              f"(at {DEFAULT_EPOCHS} epochs: {best['K=50']['wall_300'] / base['wall_300']:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--analysis-epochs", type=int, default=0,
                        help="also time a train.py run of this many epochs, analysis on vs off")
    parser.add_argument("--recipe-epochs", type=int, default=0,
                        help="also time a default train.py run of this many epochs against the "
                             "earlier recipe (EARLIER_RECIPE)")
    parser.add_argument("--recipe-pairs", type=int, default=1)
    parser.add_argument("--scale", action="store_true",
                        help="also time training on data.n_samples=1,000,000 (per sample)")
    parser.add_argument("--sweep-epochs", type=int, default=0,
                        help="also time a 2-job sweep of this many epochs: one after another "
                             "vs hydra/launcher=joblib with 2 jobs")
    parser.add_argument("--gpu", action="store_true",
                        help="time the default run on the GPU (graphed and eager) against one "
                             "CPU core of this machine, each in its own process")
    parser.add_argument("--gpu-sweep", type=int, default=0, metavar="N",
                        help="time N default runs at once on one GPU against one run alone")
    parser.add_argument("--run-epochs", type=int, default=300,
                        help="epochs of each train.py run of --gpu / --gpu-sweep")
    parser.add_argument("--cost-epochs", type=int, default=0,
                        help="time default runs over COST_ROWS (K and D growing) for this many "
                             "epochs each, split into training / analysis / final evaluation")
    parser.add_argument("--cost-repeats", type=int, default=1)
    parser.add_argument("--cost-cpu", action="store_true",
                        help="the cost table in CPU seconds of this process (a shared machine)")
    parser.add_argument("--cost-rows", default=",".join(COST_ROWS),
                        help="comma-separated rows of COST_ROWS (K=4 is always measured)")
    parser.add_argument("overrides", nargs="*",
                        help="Hydra overrides for the per-step comparison (model.prior=standard)")
    args = parser.parse_args()
    if args.gpu or args.gpu_sweep:
        require_cuda("--gpu" if args.gpu else "--gpu-sweep")
        if args.gpu:
            gpu_vs_cpu(args.run_epochs)
        if args.gpu_sweep:
            gpu_sweep(args.gpu_sweep, args.run_epochs)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_lightning()
    if args.cost_epochs:
        unknown = [r for r in args.cost_rows.split(",") if r not in COST_ROWS]
        if unknown:
            sys.exit(f"error: --cost-rows must name rows of {', '.join(COST_ROWS)} "
                     f"(got {', '.join(unknown)})")
        cost_table(args.cost_epochs, args.cost_repeats, args.cost_rows.split(","),
                   args.cost_cpu)
        return
    cfg = compose_cfg([*BASE, *args.overrides])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"n={cfg.data.n_samples}, batch={cfg.data.batch_size}, "
          f"hidden={list(cfg.model.hidden_dims)}, latent={cfg.model.latent_dim}, "
          f"prior={cfg.model.prior}, epochs={args.epochs} (epoch 0 = warm-up)")
    paired_fit(cfg, 2)  # warm-up
    lit, raw, ratios = [], [], []
    for _ in range(args.repeats):
        timer = paired_fit(cfg, args.epochs)
        lit += timer.lightning
        raw += timer.plain
        ratios += [a / b for a, b in zip(timer.lightning, timer.plain, strict=True)]
    steps = cfg.data.steps_per_call
    med_raw, med_lit = statistics.median(raw), statistics.median(lit)
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    mean_raw, mean_lit = statistics.fmean(raw), statistics.fmean(lit)
    print(f"raw loop:  {mean_raw * 1e3:.3f} ms/step mean, {med_raw * 1e3:.3f} median")
    print(f"lightning: {mean_lit * 1e3:.3f} ms/step mean, {med_lit * 1e3:.3f} median")
    print(f"{len(ratios)} paired windows of {steps} steps; per-pair ratio quartiles "
          f"{q1:.2f} / {statistics.median(ratios):.2f} / {q3:.2f}")
    if args.analysis_epochs:
        times = {}
        for label, every, tsne, final in (("off", 0, 0, "false"), ("on", None, None, "true")):
            over = [f"trainer.max_epochs={args.analysis_epochs}",
                    f"analysis.evaluate_at_end={final}"]
            if every is not None:
                over += [f"analysis.every_n_epochs={every}", f"analysis.tsne_every_n_epochs={tsne}"]
            times[label] = timed_train(over)
        print(f"train.py {args.analysis_epochs} epochs: analysis off {times['off']:.1f} s, "
              f"on {times['on']:.1f} s")
        print(f"analysis on/off ratio: {times['on'] / times['off']:.2f}")
    if args.recipe_epochs:
        recipe_cost(args.recipe_epochs, args.recipe_pairs)
    if args.scale:
        big = compose_cfg([*BASE, *args.overrides, "data.n_samples=1000000"])
        timer = paired_fit(big, 1, raw_cfg=cfg)  # yardstick: the same 10k-point raw loop
        big_ratio = statistics.fmean(timer.lightning) / statistics.fmean(timer.plain)
        small_ratio = mean_lit / mean_raw
        bs = big.data.batch_size
        print(f"n_samples=1,000,000: {statistics.fmean(timer.lightning) / bs * 1e6:.2f} us/sample "
              f"({big_ratio:.2f}x the paired raw loop on 10,000 points) vs "
              f"{mean_lit / bs * 1e6:.2f} us/sample at 10,000 ({small_ratio:.2f}x); "
              f"per-sample cost at 1M relative to 10k: {big_ratio / small_ratio:.2f}")
    if args.sweep_epochs:
        sweep_ratio(args.sweep_epochs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS): {peak:.0f} MiB")
    print(f"lightning/raw ratio: {mean_lit / mean_raw:.2f}")


if __name__ == "__main__":
    main()
