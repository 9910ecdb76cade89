"""Unsupervised white-box membership inference (Nasr et al. 2019, Section IV-C).

Without any membership labels, an encoder-decoder is trained on the target records'
features: the encoder is the Nasr attack network (its scalar output is the *code*), the
decoder reconstructs a summary of each record's features from that single number. The
codes are split in two by spectral clustering; the cluster whose records have the
smaller mean gradient norm is called "member" (members are fitted, so their gradients
are small). Scores are the codes, signed so that the member cluster lies higher.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.cluster import SpectralClustering
from torch import nn

from attacks.base import MembershipAttack, at_least, in_interval, one_of, positive
from attacks.metrics import choose_threshold
from attacks.nasr import (
    LOSS_EPS,
    SCALINGS,
    NasrAttackNet,
    as_snapshots,
    batch_tensors,
    check_specs,
    collect_inputs,
    predict_logits,
    seeded_rng,
    select_grad_names,
    specs_for,
    train_early_stopping,
    train_one_epoch,
)


def summary_features(features, layers: Sequence[str] | None = None, use_grads: bool = True) -> np.ndarray:
    """What the decoder reconstructs: (n, k) float32, per snapshot log(loss) and
    (if ``use_grads``) log(gradient norm) of each selected parameter, in a fixed order."""
    cols = []
    for fs in as_snapshots(features):
        cols.append(np.log(np.asarray(fs.loss, dtype=np.float64) + LOSS_EPS))
        if not use_grads:
            continue
        norms = fs.grad_norms()
        for name in select_grad_names(fs, layers):
            cols.append(np.log(norms[name].astype(np.float64) + 1e-12))
    return np.stack(cols, axis=1).astype(np.float32)


def mean_grad_norm(features, layers: Sequence[str] | None = None) -> np.ndarray:
    """(n,) each record's total gradient norm over selected parameters, averaged over
    snapshots; the loss stands in when no gradients were extracted."""
    per_snap = []
    for fs in as_snapshots(features):
        names = select_grad_names(fs, layers)
        if names:
            norms = fs.grad_norms()
            per_snap.append(np.sqrt(sum(norms[k].astype(np.float64) ** 2 for k in names)))
        else:
            per_snap.append(np.asarray(fs.loss, dtype=np.float64))
    return np.mean(per_snap, axis=0)


class _AutoEncoder(nn.Module):
    def __init__(self, encoder: NasrAttackNet, out_dim: int, sizes: Sequence[int]):
        super().__init__()
        self.encoder = encoder
        dims = [1, *sizes]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.decoder = nn.Sequential(*layers, nn.Linear(dims[-1], out_dim))

    def forward(self, inputs):
        code = self.encoder(inputs)
        return code, self.decoder(code.unsqueeze(1))


class UnsupervisedAttack(MembershipAttack):
    """Encoder-decoder + spectral clustering; no membership labels needed.

    Feature choice and model sizes as in :class:`attacks.supervised.NasrAttack`.
    ``decoder_sizes``: hidden widths of the decoder (scalar code -> summary).
    Training: Adam(``lr``) on reconstruction MSE, early stopping on a random
    ``val_fraction`` of the (unlabelled) records. Clustering: SpectralClustering
    (n_clusters=2, nearest-neighbour affinity, ``random_state=seed``) on the
    standardized codes of at most ``max_cluster_points`` records.

    ``fit(features, is_member=None)``: features = list of FeatureSet of the records to
    be scored (n records); ``is_member`` is ignored (``needs_labels = False``).
    ``score_samples``: (n,) signed code, continuous and unbounded.

    After ``fit``: ``sign_`` (+1/-1 orientation of the code), ``threshold_`` (score
    that best reproduces the clusters), ``cluster_member_`` (0/1 per fitted record, or
    per clustered subsample when n > max_cluster_points, with ``cluster_idx_``),
    ``history_``, ``net_``, ``specs_``.
    """

    needs_labels = False
    _param_rules = {
        "conv_filters": positive(),
        "grad_scaling": one_of(*SCALINGS),
        "lr": positive(),
        "epochs": positive(),
        "batch_size": positive(),
        "val_fraction": in_interval(0.0, 1.0),
        "patience": positive(),
        "n_neighbors": at_least(1),
        "max_cluster_points": at_least(2),
    }

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        *,
        output_layers: Sequence[str] | None = None,
        use_outputs: bool = True,
        use_loss: bool = True,
        use_label: bool = True,
        use_grads: bool = True,
        conv_filters: int = 32,
        grad_scaling: str = "asinh",
        fc_sizes: Sequence[int] = (128, 64),
        encoder_sizes: Sequence[int] = (256, 128, 64),
        decoder_sizes: Sequence[int] = (64, 128),
        lr: float = 1e-3,
        epochs: int = 100,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        patience: int = 10,
        n_neighbors: int = 10,
        max_cluster_points: int = 3000,
        seed: int = 0,
        device: str = "cpu",
    ):
        self.layers = None if layers is None else list(layers)
        self.output_layers = None if output_layers is None else list(output_layers)
        self.use_outputs, self.use_loss = use_outputs, use_loss
        self.use_label, self.use_grads = use_label, use_grads
        self.conv_filters, self.grad_scaling = conv_filters, grad_scaling
        self.fc_sizes, self.encoder_sizes = tuple(fc_sizes), tuple(encoder_sizes)
        self.decoder_sizes = tuple(decoder_sizes)
        self.lr, self.epochs, self.batch_size = lr, epochs, batch_size
        self.val_fraction, self.patience = val_fraction, patience
        self.n_neighbors, self.max_cluster_points = n_neighbors, max_cluster_points
        self.seed, self.device = seed, device

    def _inputs(self, features) -> dict[str, np.ndarray]:
        return collect_inputs(
            features, layers=self.layers, output_layers=self.output_layers, use_outputs=self.use_outputs,
            use_loss=self.use_loss, use_label=self.use_label, use_grads=self.use_grads,
        )

    def _codes(self, arrays) -> np.ndarray:
        return predict_logits(self.net_.encoder, arrays, 1024, torch.device(self.device))

    def fit(self, features, is_member=None) -> UnsupervisedAttack:
        """Train on the target records' features (list of FeatureSet, n records); no
        labels: ``is_member`` is ignored."""
        self._validate_params()
        arrays = self._inputs(features)
        target = self._reconstruction_target(features)
        n = len(target)
        self.specs_ = specs_for(arrays)
        rng = np.random.default_rng(self.seed)
        perm = rng.permutation(n)
        n_val = int(round(self.val_fraction * n)) if n >= 10 else 0
        va, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        self.net_ = self._train(arrays, target, tr, va, rng)
        self._cluster(self._codes(arrays), features, rng)
        return self

    def _reconstruction_target(self, features) -> np.ndarray:
        """Standardized summary features (n, k) float32; sets ``summary_mean_/std_``."""
        summary = summary_features(features, self.layers, self.use_grads)
        self.summary_mean_ = summary.mean(0)
        self.summary_std_ = np.maximum(summary.std(0), 1e-6)
        return ((summary - self.summary_mean_) / self.summary_std_).astype(np.float32)

    def _train(self, arrays: dict[str, np.ndarray], target: np.ndarray, tr: np.ndarray, va: np.ndarray,
               rng: np.random.Generator) -> _AutoEncoder:
        """The autoencoder trained on records ``tr``, early-stopped on ``va``; sets ``history_``."""
        dev = torch.device(self.device)
        tgt = torch.from_numpy(target).to(dev)
        with seeded_rng(self.seed, dev):
            enc = NasrAttackNet(self.specs_, fc_sizes=self.fc_sizes, conv_filters=self.conv_filters,
                                encoder_sizes=self.encoder_sizes, grad_scaling=self.grad_scaling)
            enc.fit_normalization({k: a[tr] for k, a in arrays.items()})
            net = _AutoEncoder(enc, target.shape[1], self.decoder_sizes).to(dev)
            opt = torch.optim.Adam(net.parameters(), lr=self.lr)

            def batch_loss(b: np.ndarray) -> torch.Tensor:
                _, rec = net(batch_tensors(arrays, b, dev))
                return ((rec - tgt[b]) ** 2).mean()

            def train_epoch() -> float:
                return train_one_epoch(opt, rng.permutation(tr), self.batch_size, batch_loss) / len(tr)

            def val_loss() -> float:
                net.eval()
                with torch.no_grad():
                    sse = sum(float(((net(batch_tensors(arrays, b, dev))[1] - tgt[b]) ** 2).sum())
                              for b in np.array_split(va, -(-len(va) // 1024)))
                return sse / target[va].size

            self.history_, _ = train_early_stopping(
                net, epochs=self.epochs, patience=self.patience, train_epoch=train_epoch,
                val_loss=val_loss if len(va) else None,
            )
        return net

    def _cluster(self, codes: np.ndarray, features, rng: np.random.Generator) -> None:
        """Split the codes in two; sets ``sign_``, ``cluster_idx_``, ``cluster_member_``,
        ``threshold_``."""
        n = len(codes)
        # Spectral clustering is O(n^2) in memory: cluster a seeded subsample if large.
        idx = np.arange(n)
        if n > self.max_cluster_points:
            idx = np.sort(rng.choice(n, self.max_cluster_points, replace=False))
        c = codes[idx]
        z = (c - c.mean()) / (c.std() + 1e-12)
        sc = SpectralClustering(n_clusters=2, affinity="nearest_neighbors",
                                n_neighbors=min(self.n_neighbors, len(idx) - 1), random_state=self.seed)
        # "graph is not fully connected" is expected when the clusters separate well.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            labels = sc.fit_predict(z.reshape(-1, 1))
        gn = mean_grad_norm(features, self.layers)[idx]
        if labels.min() == labels.max():  # degenerate split: fall back to the median code
            labels = (c > np.median(c)).astype(int)
        if labels.min() == labels.max():  # constant codes: nothing learned, split on norms
            labels = (gn > np.median(gn)).astype(int)
        member_label = int(np.argmin([gn[labels == k].mean() for k in (0, 1)]))
        member = (labels == member_label).astype(np.int64)
        self.sign_ = 1.0 if c[member == 1].mean() >= c[member == 0].mean() else -1.0
        self.cluster_idx_, self.cluster_member_ = idx, member
        self.threshold_ = choose_threshold(self.sign_ * c, member)

    def score_samples(self, features) -> np.ndarray:
        """(n,) signed code, higher = more member-like (continuous, unbounded)."""
        arrays = self._inputs(features)
        check_specs(self.specs_, arrays)
        return self.sign_ * self._codes(arrays)
