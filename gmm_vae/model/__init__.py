"""The VAE (a plain nn.Module), its priors, losses and schedules, and the LightningModule that
trains it."""
