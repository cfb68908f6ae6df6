"""gmm-vae: can a VAE learn a multi-modal distribution, and how do we know?"""

from gmm_vae.config import register_configs

__version__ = "0.1.0"

register_configs()
