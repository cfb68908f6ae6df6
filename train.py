"""Train a VAE on a Gaussian mixture: ``python train.py [overrides]`` (see README)."""

import hydra
from omegaconf import DictConfig

from gmm_vae.cli import run_cli
from gmm_vae.pipeline import run_training


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    return run_training(cfg)


if __name__ == "__main__":
    run_cli(main)
