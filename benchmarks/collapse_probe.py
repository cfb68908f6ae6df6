"""Watch the first epochs of training: does the posterior collapse, and which direction dies?

    python benchmarks/collapse_probe.py ring8                       # today's default recipe
    python benchmarks/collapse_probe.py ring8 --recipe none         # the earlier default
    python benchmarks/collapse_probe.py cube27 --recipe warmup --epochs 60 --latent 2
    python benchmarks/collapse_probe.py ring8 --recipe none --scale 3   # data variance 9
    python benchmarks/collapse_probe.py d10k8 --refit-every 25 --refit-final --diagnose

The docs/fidelity.md's "Posterior collapse on the ring" was measured with this script. It trains
the project's own ``VAE`` (same loss, same prior, Adam with cosine decay) in a plain loop,
without Lightning or evaluation, so a run of 300 epochs takes a minute, and prints per epoch
the loss terms, the number of active latent units (posterior-mean variance > 0.01), and the
decoder's log-variance per data axis: an axis whose log-variance climbs back to ~0 (the
variance of standardised data) is being explained as noise instead of encoded. At the end:
HQ share against a perfect sampler's, weight error and modes captured (the honest instruments,
200k samples) and the held-out NLL gap.

The plain loop has no prior refit unless asked: ``--refit-every N`` refits the mixture prior by
EM every N epochs after the KL warm-up and ``--refit-final`` after the last epoch (the default
``train.py`` recipe does both, N = a twelfth of training). p(x|z) has a full covariance as in
``train.py`` (``model.decoder_covariance``); ``--covariance diag`` gives the axis-aligned head
that every measurement before it was made with (docs/fidelity.md, "Rounded components").

``--diagnose`` scores samples decoded from the aggregate posterior (z ~ q(z|x) of training
points) beside samples decoded from the prior, and counts prior samples far from every
posterior: off-mode samples that come from the prior alone are holes in the prior (docs/fidelity.md,
"Holes in the prior"). ``--save`` / ``--load`` keep a trained model to diagnose again.

Recipes: ``default`` (the config's: KL warm-up over a third of training, p(x|z) starting at
log-variance -6 with its log-variance capped, rising to 0 over a sixth), ``none`` (no warm-up,
decoder initialised as any linear layer: the earlier default), ``warmup`` (KL warm-up only),
``narrow`` (initial log-variance -6 only), ``narrow+warmup`` (both, no cap).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gmm_vae.analysis import coverage, metrics  # noqa: E402
from gmm_vae.data import suite  # noqa: E402
from gmm_vae.data.datamodule import GMMDataModule  # noqa: E402
from gmm_vae.model import schedules  # noqa: E402
from gmm_vae.model.vae import VAE  # noqa: E402
from gmm_vae.shapes import auto_latent_dim  # noqa: E402

RECIPES = {  # (KL warm-up share, initial decoder log-variance, variance-cap share)
    "default": (1 / 3, -6.0, 1 / 6),
    "none": (0.0, 0.0, 0.0),
    "warmup": (1 / 3, 0.0, 0.0),
    "narrow": (0.0, -6.0, 0.0),
    "narrow+warmup": (1 / 3, -6.0, 0.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mixture", help=f"one of {', '.join(suite.NAMES)}, or a spec file")
    parser.add_argument("--recipe", choices=list(RECIPES), default="default")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=42, help="training seed")
    parser.add_argument("--latent", type=int, default=None, help="latent units (auto: max(2, D))")
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 128],
                        help="hidden layer widths of encoder and decoder")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply the standardised data (variance scale**2)")
    parser.add_argument("--every", type=int, default=0, help="print every N epochs (auto)")
    parser.add_argument("--save", default=None, help="save the trained model's state here")
    parser.add_argument("--load", default=None, help="skip training: load this saved state")
    parser.add_argument("--refit-every", type=int, default=0,
                        help="refit the mixture prior by EM every N epochs after the warm-up")
    parser.add_argument("--refit-final", action="store_true",
                        help="refit the mixture prior by EM after the last epoch")
    parser.add_argument("--batch", type=int, default=128, help="mini-batch size")
    parser.add_argument("--lr", type=float, default=2e-3, help="initial learning rate")
    parser.add_argument("--init-log-var", type=float, default=None,
                        help="override the recipe's initial decoder log-variance")
    parser.add_argument("--covariance", choices=["full", "diag"], default="full",
                        help="p(x|z)'s covariance: full (the default, model.decoder_covariance)"
                        " or diagonal (the earlier head)")
    parser.add_argument("--diagnose", action="store_true",
                        help="also score samples decoded from the aggregate posterior q(z)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        if args.mixture in suite.NAMES:
            gmm = suite.truth_of(suite.mixtures(Path(tmp))[args.mixture])
            spec = Path(tmp) / "truth.yaml"
            gmm.to_yaml(spec)
        elif Path(args.mixture).is_file():
            spec = Path(args.mixture)
        else:
            parser.error(f"mixture must be one of {', '.join(suite.NAMES)} or a spec file "
                         f"(got {args.mixture!r})")
        dm = GMMDataModule(spec_path=str(spec))
        gmm = dm.gmm
    kl_share, init, cap_share = RECIPES[args.recipe]
    if args.init_log_var is not None:
        init = args.init_log_var
    warm, cap_epochs = int(args.epochs * kl_share), int(args.epochs * cap_share)
    torch.manual_seed(args.seed)
    model = VAE(data_dim=gmm.dim, latent_dim=args.latent or auto_latent_dim(gmm.dim), prior="mog",
                hidden_dims=args.hidden, decoder_covariance=args.covariance,
                prior_components=64, decoder_init_log_var=init, cap_log_var=cap_epochs > 0,
                data_shift=dm.normalizer.shift.tolist(),
                data_scale=(dm.normalizer.scale / args.scale).tolist())
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, fused=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    x = dm.t_train * args.scale
    gen = torch.Generator().manual_seed(args.seed)
    every = args.every or max(1, args.epochs // 15)
    start = time.perf_counter()
    if args.load:
        model.load_state_dict(torch.load(args.load))
    for epoch in range(0 if args.load else args.epochs):
        model.set_log_var_ceiling(schedules.log_var_ceiling(epoch, init, cap_epochs))
        beta = schedules.kl_weight(epoch, 1.0, warm)
        sums, n = np.zeros(3), 0
        for idx in torch.randperm(len(x), generator=gen).split(args.batch):
            terms = model.loss_terms(x[idx], kl_weight=beta)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            sums += [float(terms[k]) for k in ("loss", "recon", "kl")]
            n += 1
        sched.step()
        # The run's refit schedule; the final refit is --refit-final's.
        if schedules.prior_refit_due(epoch, args.refit_every or 0, warm, max_epochs=None):
            model.refit_prior(x, seed=args.seed * 100_003 + epoch)
        if epoch % every == 0 or epoch == args.epochs - 1:
            with torch.no_grad():
                mean, _ = model.encode(dm.t_val * args.scale)
                _, dec_lv = model.decode_params(mean)
            active = int((mean.var(0) > metrics.ACTIVE_UNIT_THRESHOLD).sum())
            axes = " ".join(f"{v:+.2f}" for v in dec_lv.mean(0).tolist())
            print(f"epoch {epoch:3d}  loss {sums[0] / n:7.3f}  recon {sums[1] / n:7.3f}  "
                  f"kl {sums[2] / n:6.3f}  beta {beta:.2f}  active units {active}  "
                  f"decoder log-var per axis [{axes}]", flush=True)
    model.set_log_var_ceiling(schedules.log_var_ceiling(args.epochs, init, cap_epochs))
    model.eval()
    if args.refit_final:
        before, after = model.refit_prior(x, seed=args.seed)
        print(f"final refit: E_q log p(z) {before:.3f} -> {after:.3f}")
    if args.save:
        torch.save(model.state_dict(), args.save)
    if args.diagnose:
        diagnose(model, dm, gmm)
    torch.manual_seed(0)
    samples = model.sample(200_000).double().numpy()
    cov = coverage.mode_coverage(samples, gmm)
    log_p = model.log_prob(torch.from_numpy(dm.x_test), k=64).double().numpy()
    gap = metrics.heldout_nll(log_p, gmm.log_prob(dm.x_test))["gap"]
    refits = (f" refit every {args.refit_every}" if args.refit_every else "") + \
        (" refit final" if args.refit_final else "")
    print(f"{args.mixture} recipe={args.recipe}{refits} seed={args.seed}: modes "
          f"{cov['modes_captured']}/{cov['n_components']}, HQ ratio {cov['hq_ratio']:.3f}, "
          f"weight error {cov['weights_tv']:.4f}, NLL gap {gap:.3f} nats "
          f"({time.perf_counter() - start:.0f} s)")


@torch.no_grad()
def diagnose(model: VAE, dm: GMMDataModule, gmm: object) -> None:
    """Where do off-mode samples come from: the prior, or the decoder?

    Samples decoded from the aggregate posterior (z ~ q(z|x) for training points x) are off-mode
    only where the decoder maps a posterior's own region off-mode; samples from the prior are
    off-mode also where p(z) puts mass that no q(z|x) covers (a hole the prior fills).
    """
    torch.manual_seed(1)
    x = dm.t_train.repeat(20, 1)
    mean, log_var = model.encode(x)
    z = model.reparameterize(mean, log_var)
    agg = model.denormalize(model.decode_sample(z))
    cov = coverage.mode_coverage(agg.double().numpy(), gmm)
    print(f"  aggregate posterior: HQ ratio {cov['hq_ratio']:.3f}, weight error "
          f"{cov['weights_tv']:.4f}, off-mode {cov['off_mode_share']:.3f}")
    prior_z = model.prior.sample(200_000)
    # Posterior density of the prior's samples: a prior sample far from every q(z|x) is a hole.
    from sklearn.neighbors import NearestNeighbors
    nn_index = NearestNeighbors(n_neighbors=1).fit(mean[:10_000].numpy())
    dist, idx = nn_index.kneighbors(prior_z[:20_000].numpy())
    sd = torch.exp(0.5 * log_var[:10_000]).numpy()[idx[:, 0]].mean(-1)
    far = (dist[:, 0] / sd > 3).mean()
    print(f"  prior samples over 3 posterior sds from every posterior mean: {far:.3f}")
    xs = model.denormalize(model.decode_sample(prior_z))
    cov = coverage.mode_coverage(xs.double().numpy(), gmm)
    print(f"  prior: HQ ratio {cov['hq_ratio']:.3f}, weight error {cov['weights_tv']:.4f}, "
          f"off-mode {cov['off_mode_share']:.3f}")


if __name__ == "__main__":
    main()
