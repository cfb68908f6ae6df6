"""Train a VAE on a Gaussian mixture: ``python train.py [overrides]`` (see README)."""

import hydra
from omegaconf import DictConfig

from gmm_vae.cli import run_cli, train_main, validate_or_exit


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    # torch and Lightning load only once the config is known to be valid: a typo fails fast.
    validate_or_exit(cfg)
    return train_main(cfg)


if __name__ == "__main__":
    run_cli(main)
