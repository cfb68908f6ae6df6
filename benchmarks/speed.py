"""Speed benchmark: the project's Lightning training vs a raw PyTorch loop, analysis on vs off.

    python benchmarks/speed.py [--epochs 20] [--repeats 3] [--threads N] [--analysis-epochs 500]

Everything runs in one process, so the ratios compare like with like on whatever machine runs
it. Part 1 times per-step training: (a) a plain loop over in-memory tensors (permute, slice,
forward, backward, Adam) and (b) ``trainer.fit`` with the project's data module, model, logging
and progress bar, on the same model, data, batch size and number of steps, after a warm-up, best
of ``--repeats``. Part 2 times a default ``train.py`` run with analysis on vs off. The last line
is ``lightning/raw ratio: X.XX``.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing: benchmarks are scripts

from hydra import compose, initialize_config_dir  # noqa: E402

from gmm_vae.callbacks import build_callbacks  # noqa: E402
from gmm_vae.pipeline import build_datamodule, build_model, build_trainer, quiet_lightning, train  # noqa: E402

# Training only: no validation, checkpoints or analysis (the raw loop has none of them).
BASE = ["trainer.accelerator=cpu", "trainer.limit_val_batches=0", "callbacks.checkpoint=false",
        "analysis.every_n_epochs=0", "analysis.tsne_every_n_epochs=0",
        "analysis.evaluate_at_end=false"]


def compose_cfg(overrides: list[str]):  # type: ignore[no-untyped-def]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def raw_loop(cfg, epochs: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """Seconds and steps of a plain PyTorch loop, epoch 0 excluded as warm-up."""
    L.seed_everything(0, verbose=False)
    dm = build_datamodule(cfg)
    model = build_model(cfg, dm)
    opt = model.configure_optimizers()  # the same (fused) Adam the Lightning run uses
    data, bs = dm.t_train, cfg.data.batch_size
    steps, start = 0, 0.0
    for epoch in range(epochs):
        if epoch == 1:
            start, steps = time.perf_counter(), 0
        for batch in data[torch.randperm(len(data))].split(bs):
            loss = model.loss_terms(batch)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    return time.perf_counter() - start, steps


class StepTimer(L.Callback):
    """Wall time of the training steps from epoch 1 on (epoch 0 is warm-up)."""

    def __init__(self) -> None:
        self.start = 0.0
        self.end = 0.0
        self.first_step = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 1:
            self.start, self.first_step = time.perf_counter(), trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.end = time.perf_counter()


def lightning_fit(cfg, epochs: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """Seconds and steps of the project's ``trainer.fit`` from epoch 1 on (no validation)."""
    L.seed_everything(0, verbose=False)
    dm = build_datamodule(cfg)
    model = build_model(cfg, dm)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        callbacks = [c for c in build_callbacks(cfg, Path(tmp))
                     if type(c).__name__ in ("TQDMProgressBar", "NaNGuard", "RNGState")]
        trainer = build_trainer(cfg, Path(tmp), [*callbacks, timer])
        trainer.fit_loop.max_epochs = epochs
        trainer.fit(model, datamodule=dm)
        return timer.end - timer.start, int(trainer.global_step) - timer.first_step


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--analysis-epochs", type=int, default=0,
                        help="also time a train.py run of this many epochs, analysis on vs off")
    parser.add_argument("--scale", action="store_true",
                        help="also time training on data.n_samples=1,000,000 (per sample)")
    parser.add_argument("--sweep-epochs", type=int, default=0,
                        help="also time a 2-job sweep of this many epochs: one after another "
                             "vs hydra/launcher=joblib with 2 jobs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_lightning()
    cfg = compose_cfg(BASE)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"n={cfg.data.n_samples}, batch={cfg.data.batch_size}, "
          f"hidden={list(cfg.model.hidden_dims)}, latent={cfg.model.latent_dim}, "
          f"prior={cfg.model.prior}, epochs={args.epochs} (epoch 0 = warm-up)")
    raw_loop(cfg, 2)
    lightning_fit(cfg, 2)  # warm-up both paths
    raw_t, lit_t = [], []
    for _ in range(args.repeats):
        t, steps = raw_loop(cfg, args.epochs)
        raw_t.append(t / steps)
        t, lsteps = lightning_fit(cfg, args.epochs)
        lit_t.append(t / lsteps)
    raw, lit = min(raw_t), min(lit_t)
    print(f"raw loop:  {raw * 1e3:.3f} ms/step ({steps} steps)")
    print(f"lightning: {lit * 1e3:.3f} ms/step ({lsteps} steps)")
    if args.analysis_epochs:
        times = {}
        for label, every, tsne, final in (("off", 0, 0, "false"), ("on", None, None, "true")):
            over = [f"trainer.max_epochs={args.analysis_epochs}", "trainer.accelerator=cpu",
                    "trainer.enable_progress_bar=false", f"analysis.evaluate_at_end={final}"]
            if every is not None:
                over += [f"analysis.every_n_epochs={every}", f"analysis.tsne_every_n_epochs={tsne}"]
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                train(compose_cfg(over), Path(tmp))
                times[label] = time.perf_counter() - start
        print(f"train.py {args.analysis_epochs} epochs: analysis off {times['off']:.1f} s, "
              f"on {times['on']:.1f} s")
        print(f"analysis on/off ratio: {times['on'] / times['off']:.2f}")
    if args.scale:
        big = compose_cfg([*BASE, "data.n_samples=1000000"])
        t_big, s_big = lightning_fit(big, 2)
        per_big = t_big / (s_big * big.data.batch_size)
        per_small = lit / cfg.data.batch_size
        print(f"n_samples=1,000,000: {per_big * 1e6:.2f} us/sample vs {per_small * 1e6:.2f} "
              f"us/sample at 10,000 (ratio {per_big / per_small:.2f})")
    if args.sweep_epochs:
        sweep_ratio(args.sweep_epochs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS): {peak:.0f} MiB")
    print(f"lightning/raw ratio: {lit / raw:.2f}")


if __name__ == "__main__":
    main()
