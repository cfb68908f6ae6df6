"""Evaluate a trained run: ``python evaluate.py run_dir=<dir> [ckpt=last|best|<path>]`` (README)."""

import hydra
from omegaconf import DictConfig

from gmm_vae.cli import evaluate_main, run_cli


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    evaluate_main(cfg)


if __name__ == "__main__":
    run_cli(main)
