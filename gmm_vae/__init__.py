"""gmm-vae: can a VAE learn a multi-modal distribution, and how do we know?"""

from gmm_vae.config import register_configs

__version__ = "0.1.0"

register_configs()

from gmm_vae.api import judge  # noqa: E402  (gmm_vae.judge(samples, gmm): the README's)

__all__ = ["judge"]
