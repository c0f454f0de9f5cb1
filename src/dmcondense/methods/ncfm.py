"""NCFM: neural characteristic function matching (Wang et al., CVPR 2025).

    pool <- networks pretrained on the real data, each at its initial and trained weights
    for each iteration t (one training_step, one global step):
        i, l    = a pool network and l ~ U(0, 1)                   generator(seed, "pool-pick", t)
        psi     <- l * initial_i + (1 - l) * trained_i
        for each class c in turn (the authors' order):
            omega_c = one draw of color, crop and cutout (IDC's batch mode, their DiffAug),
                      shared by real and synthetic
            R, S    = normalise(psi(A(real_c, omega_c))), normalise(psi(A(decode(S)_c, omega_c)))
            T       = Gaussian frequencies [num_freqs, D], from generator(seed, "freqs", t) in
                      class order (or the sampling network's output, which ascends the loss)
            loss_c  = scale * mean_T sqrt(alpha * amplitude + beta * phase)
            S <- AdamW step on loss_c
        for each class c in turn: S <- step on calibration_weight * CE(trained_i(A(decode(S)_c)), c)
        S <- clamp(S, 0, 1); ReduceLROnPlateau on the iteration's mean loss a class

Every image step is the base's `update_images`: the pixels are clamped once an iteration, after
its last step (the authors clamp at the start of each iteration), and only that step counts a
global step, so one global step is one iteration (checkpoints, resume and max_steps count
iterations).

Under DDP each rank matches its own classes and makes every other class's image step with a
zero gradient, so each step is the optimiser step one process makes; after the iteration every
rank takes each class's rows (pixels and AdamW state) from the rank that matched it, and the
result equals one process's. The sampling network, which steps after every class, refuses DDP.

The pool and the sampling network are the base's auxiliary parts, placed on the device at fit
start. The pool networks are data, handed in as (initial, trained) state dicts, never learned or
saved. The sampling network learns outside the image optimiser; it and its optimiser are saved
in the checkpoints, so a resumed run ends where an unbroken one does.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dmcondense.data.datamodule import rank_classes
from dmcondense.errors import ConfigError
from dmcondense.methods.base import (
    AuxiliaryPart,
    CondensationMethod,
    LearnedNetwork,
    full_precision,
)
from dmcondense.models.init import reset_parameters
from dmcondense.rng import generator

OPTIMIZERS = ("adamw", "sgd")
SQRT_FLOOR = 1e-12  # below it the square root (and its gradient) is taken as 0


def characteristic_function(features: Tensor, freqs: Tensor) -> tuple[Tensor, Tensor]:
    """The empirical characteristic function of each class's features at each frequency:
    features [k, n, D], freqs [k, F, D] (one set a class) or [F, D] (shared) -> (Re, Im), each
    [k, F]: the means over the n features of cos(t . f) and sin(t . f)."""
    phases = torch.matmul(features, freqs.transpose(-1, -2))  # [k, n, F]
    return torch.cos(phases).mean(dim=1), torch.sin(phases).mean(dim=1)


def safe_sqrt(x: Tensor) -> Tensor:
    """sqrt(x) for x above SQRT_FLOOR, else 0, with a finite (zero) gradient there."""
    above = x > SQRT_FLOOR
    return torch.where(above, torch.sqrt(torch.where(above, x, torch.ones_like(x))), 0.0)


@full_precision
def cf_loss(
    real: Tensor,
    synthetic: Tensor,
    freqs: Tensor,
    alpha: float = 0.5,
    beta: float = 0.5,
    scale: float = 300.0,
) -> Tensor:
    """NCFM's loss per class: real [k, n, D], synthetic [k, m, D] features (L2-normalised here,
    per image), freqs [k, F, D] or [F, D] -> [k].

        amplitude = (|Phi_r| - |Phi_s|)^2
        phase     = 2 (|Phi_r| |Phi_s| - Re Phi_r Re Phi_s - Im Phi_r Im Phi_s)
        loss      = scale * mean over t of sqrt(alpha * amplitude + beta * phase)

    The phase term is computed as |Phi_r - Phi_s|^2 - amplitude (equal to the line above), floored
    at 0, and the square root of anything below 1e-12 is 0 with a zero gradient, so equal sets
    give exactly 0 and a finite gradient. (The authors clamp the phase term at 1e-12 instead:
    the two differ by at most sqrt(beta * 1e-12) inside the mean, plus rounding.)
    """
    real = F.normalize(real.float(), dim=-1)
    synthetic = F.normalize(synthetic.float(), dim=-1)
    real_re, real_im = characteristic_function(real, freqs)
    syn_re, syn_im = characteristic_function(synthetic, freqs)
    real_norm = torch.sqrt(real_re.square() + real_im.square())
    syn_norm = torch.sqrt(syn_re.square() + syn_im.square())
    amplitude = (real_norm - syn_norm).square()
    # The phase term written as |Phi_r - Phi_s|^2 - amplitude (the same number): the direct form
    # cancels |Phi|^2 against Re^2 + Im^2 and leaves rounding noise where the sets are equal.
    distance = (real_re - syn_re).square() + (real_im - syn_im).square()
    phase = (distance - amplitude).clamp_min(0.0)
    combined = alpha * amplitude + beta * phase
    return scale * safe_sqrt(combined).mean(dim=-1)


def interpolate_weights(
    initial: Sequence[Tensor], trained: Sequence[Tensor], mix: float
) -> list[Tensor]:
    """mix * initial + (1 - mix) * trained, tensor by tensor; integer tensors (BatchNorm's
    batch counter) are taken from the trained network."""
    return [
        mix * a + (1.0 - mix) * b if b.is_floating_point() else b.clone()
        for a, b in zip(initial, trained, strict=True)
    ]


class SamplingNetwork(nn.Module):
    """Noise -> frequencies: 3 x (Linear D -> D, BatchNorm), LeakyReLU(0.2) between, Tanh last."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for index in range(3):
            layers += [nn.Linear(dim, dim), nn.BatchNorm1d(dim)]
            layers.append(nn.LeakyReLU(0.2) if index < 2 else nn.Tanh())
        self.layers = nn.Sequential(*layers)

    def forward(self, noise: Tensor) -> Tensor:
        return self.layers(noise)


class PretrainedPool(AuxiliaryPart):
    """The pool's networks as lists of weight tensors in the model's state-dict order, and the
    calibrating network that is loaded with a pool network's trained weights each step."""

    saves_state = False  # data handed in again with every run

    def __init__(
        self, networks: list[tuple[list[Tensor], list[Tensor]]], calibrator: nn.Module
    ) -> None:
        self.networks, self.calibrator = networks, calibrator

    def __len__(self) -> int:
        return len(self.networks)

    def __getitem__(self, index: int) -> tuple[list[Tensor], list[Tensor]]:
        return self.networks[index]

    def start(self, device: torch.device) -> None:
        self.networks = [
            ([t.to(device) for t in initial], [t.to(device) for t in trained])
            for initial, trained in self.networks
        ]
        self.calibrator.to(device).requires_grad_(False).train()


class CharacteristicFunctionMatching(CondensationMethod):
    name = "ncfm"
    uses_pretrained_pool = True

    def __init__(
        self,
        *args,
        pool: Sequence[tuple[dict, dict]] = (),
        num_freqs: int = 4096,
        alpha: float = 0.5,
        beta: float = 0.5,
        loss_scale: float = 300.0,
        calibration_weight: float = 1.0,
        optimizer: str = "adamw",
        weight_decay: float = 5e-4,
        plateau_factor: float = 0.5,
        plateau_patience: int = 500,
        sampling_net: bool = False,
        sampling_lr: float = 1e-3,
        sampling_momentum: float = 0.5,
        sampling_noise: int = 4,
        pixels: str = "unit",
        **kwargs,
    ) -> None:
        super().__init__(*args, pixels=pixels, **kwargs)
        if alpha < 0 or beta < 0 or alpha + beta == 0:
            raise ConfigError(
                f"method.alpha={alpha} and method.beta={beta} weigh NCFM's amplitude and phase "
                f"terms: both must be >= 0 and not both 0 (the authors use 0.5 and 0.5)"
            )
        if optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"unknown method.optimizer '{optimizer}'; choose one of {', '.join(OPTIMIZERS)}"
            )
        if num_freqs < 1 or sampling_noise < 2:
            raise ConfigError(
                "method.num_freqs must be 1 or more and method.sampling_noise 2 or more "
                f"(got {num_freqs} and {sampling_noise})"
            )
        if not pool:
            raise ConfigError(
                "method=ncfm needs a pool of pretrained networks; make one with "
                "python -m dmcondense.pretrain (or set pool.build=auto)"
            )
        self.num_freqs, self.alpha, self.beta = num_freqs, alpha, beta
        self.loss_scale, self.calibration_weight = loss_scale, calibration_weight
        self.optimizer_name, self.weight_decay = optimizer, weight_decay
        self.plateau_factor, self.plateau_patience = plateau_factor, plateau_patience
        self.sampling_lr, self.sampling_momentum = sampling_lr, sampling_momentum
        self.sampling_noise = sampling_noise
        keys = list(self.embed_net.state_dict())
        for initial, trained in pool:
            if list(initial) != keys or list(trained) != keys:
                raise ConfigError(
                    "the pool's networks do not fit the run's model (their weights have other "
                    "names); make the pool with the same model= settings"
                )
        # Plain tensors and a network outside nn.Module: read each step, never learned or saved.
        # The same on every rank, with no gradient to reduce: all_reduce is a no-op for it.
        self._pool = self.register_part(
            "pool",
            PretrainedPool(
                [([a[k] for k in keys], [b[k] for k in keys]) for a, b in pool],
                copy.deepcopy(self.embed_net),
            ),
            ddp="all_reduce",
            why="read-only: the same weights on every rank",
        )
        self._sampler: LearnedNetwork | None = None
        if sampling_net:
            dim = getattr(self.embed_net, "embed_dim", None)
            if dim is None:
                raise ConfigError("method.sampling_net=true needs a model with embed_dim")
            sampler = SamplingNetwork(int(dim))
            reset_parameters(sampler, generator(self.seed, "sampling-net"))
            self._sampler = self.register_part(
                "sampling_net",
                LearnedNetwork(
                    sampler,
                    lambda params: torch.optim.SGD(
                        params, lr=self.sampling_lr, momentum=self.sampling_momentum
                    ),
                ),
                ddp="refuse",
                why="its sampling network ascends the loss of every class in turn",
                setting=("method.sampling_net=true", "method.sampling_net=false"),
            )

    # --- parts that live beside the pixels ------------------------------------------------------
    @property
    def calibrator(self) -> nn.Module:
        return self._pool.calibrator

    @property
    def sampler(self) -> SamplingNetwork | None:
        return None if self._sampler is None else self._sampler.net

    def fp16_refusal(self) -> str | None:
        if self._sampler is None:
            return None  # every update is an image step, through the scaler
        return (
            "its sampling network steps on the pixels' scaled gradients, which the scaler "
            "unscales for the image optimiser only; set method.sampling_net=false"
        )

    def on_fit_start(self) -> None:
        super().on_fit_start()
        own = rank_classes(self.num_classes, self.global_rank, self.trainer.world_size)
        self.first_own_class = int(own[0]) if len(own) else self.num_classes
        self.feature_dim = None
        if self.trainer.world_size > 1:  # the frequencies' width, for other ranks' draws
            with torch.no_grad():
                probe = self.class_images(0)[:1]
                self.feature_dim = self.embed(self.pool_networks(0)[0], probe).shape[-1]

    def configure_optimizers(self) -> dict:
        if self.optimizer_name == "adamw":
            optimizer = torch.optim.AdamW(
                [self.synthetic], lr=self.lr_img, weight_decay=self.weight_decay
            )
        else:  # the authors' SGD ignores weight decay
            optimizer = torch.optim.SGD([self.synthetic], lr=self.lr_img, momentum=self.momentum)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=self.plateau_factor, patience=self.plateau_patience
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": plateau}}

    # --- the networks of a step -----------------------------------------------------------------
    def pool_draw(self, step: int) -> tuple[int, float]:
        """(pool index, l) of `step`, host draws (no device sync)."""
        picks = generator(self.seed, "pool-pick", step)
        index = int(torch.randint(len(self._pool), (), generator=picks))
        return index, float(torch.rand((), generator=picks))

    def pool_networks(self, step: int) -> tuple[nn.Module, nn.Module]:
        """The matching network of `step` (interpolated) and the calibrating one (the same pool
        network, trained), both loaded in place."""
        index, mix = self.pool_draw(step)
        initial, trained = self._pool[index]
        with torch.no_grad():
            weights = interpolate_weights(initial, trained, mix)
            for target, value in zip(self.embed_net.state_dict().values(), weights, strict=True):
                target.copy_(value)
            for target, value in zip(self.calibrator.state_dict().values(), trained, strict=True):
                target.copy_(value)
        return self.embed_net, self.calibrator

    @full_precision  # the sampling network too: its frequencies enter the loss's matmul
    def frequencies(self, draws: torch.Generator, dim: int) -> Tensor:
        """One class's frequencies: Gaussian [num_freqs, D], or the sampling network's output
        for Gaussian noise [sampling_noise, D] (the authors repeat those rows 16 times, which
        leaves the mean over frequencies unchanged)."""
        if self._sampler is None:
            return torch.randn(self.num_freqs, dim, generator=draws, device=self.device)
        noise = torch.randn(self.sampling_noise, dim, generator=draws, device=self.device)
        return self.sampler(noise)

    # --- one iteration --------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        step, classes, real = batch["step"], batch["classes"], batch["images"][0]
        n = real.shape[1]
        optimizer = self.optimizers()
        net, calibrator = self.pool_networks(step)
        calibrating = self.calibration_weight > 0
        steps_left = self.num_classes * (2 if calibrating else 1)
        # Under DDP this rank matches its own (contiguous) classes and makes every other
        # class's update with a zero gradient, so each update is the same optimiser step as in
        # one process; share_class_rows then gathers the classes' rows.
        first = self.first_own_class

        def image_step(loss: Tensor | None, inputs: list[Tensor]) -> None:
            nonlocal steps_left
            steps_left -= 1
            self.update_images(loss, last=steps_left == 0, inputs=inputs, rank_local=True)

        def own(c: int) -> int | None:
            """Class c's index in this rank's batch, or None when another rank matches it."""
            return c - first if 0 <= c - first < real.shape[0] else None

        omega = self.augment.sample(
            self.num_classes, generator(self.seed, "augment", step, device=self.device)
        )
        draws = generator(self.seed, "freqs", step, device=self.device)
        match_losses = []
        for c in range(self.num_classes):  # the authors' order
            i = own(c)
            if i is None:
                self.frequencies(draws, self.feature_dim)  # class c's draw, as one process makes it
                image_step(None, [])
                continue
            group = classes[i : i + 1]
            with torch.no_grad():
                real_x = self.augment.apply(self.normalise(real[i]), omega, group.expand(n))
                real_features = self.embed(net, real_x)
            synthetic = self.class_images(c)
            synthetic_x = self.augment.apply(synthetic, omega, group.expand(synthetic.shape[0]))
            synthetic_features = self.embed(net, synthetic_x)
            freqs = self.frequencies(draws, real_features.shape[-1])
            loss = cf_loss(
                real_features[None], synthetic_features[None], freqs,
                self.alpha, self.beta, self.loss_scale,
            )[0]  # fmt: skip
            if self._sampler is None:
                image_step(loss, [])
            else:
                self._sampler.optimizer.zero_grad(set_to_none=True)
                image_step(loss, list(self.sampler.parameters()))
                for p in self.sampler.parameters():  # min-max: the frequencies ascend the loss
                    p.grad.neg_()
                self.step_part("sampling_net", self._sampler.optimizer)
            match_losses.append(loss.detach())

        calibration_losses = []
        if calibrating:
            cal_omega = self.augment.sample(
                self.num_classes, generator(self.seed, "calibrate", step, device=self.device)
            )
            for c in range(self.num_classes):
                i = own(c)
                if i is None:
                    image_step(None, [])
                    continue
                synthetic = self.class_images(c)
                m = synthetic.shape[0]
                x = self.augment.apply(synthetic, cal_omega, classes[i : i + 1].expand(m))
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                logits = calibrator(x).float()
                loss = self.calibration_weight * F.cross_entropy(logits, classes[i].expand(m))
                image_step(loss, [])
                calibration_losses.append(loss.detach())
        self.share_class_rows(classes)

        match = torch.stack(match_losses).sum() if match_losses else self.synthetic.new_zeros(())
        calibration = torch.stack(calibration_losses).sum() if calibration_losses else 0.0 * match
        own_share = (match + calibration) / self.num_classes
        if self.trainer.world_size > 1:  # every rank's scheduler sees the loss of all classes
            sums = torch.stack([match, calibration])
            match, calibration = self.trainer.strategy.reduce(sums, reduce_op="sum")
        loss = (match + calibration) / self.num_classes  # the authors' figure: the mean a class
        self.lr_schedulers().step(loss)  # a host sync: the plateau test needs the number
        self.log("train/match", match / self.num_classes)
        self.log("train/calibration", calibration / self.num_classes)
        # A tensor made on the device: Lightning would copy a Python number there (a sync).
        self.log(
            "train/lr_img", self.synthetic.new_full((), optimizer.optimizer.param_groups[0]["lr"])
        )
        self.log_loss(own_share)  # summed over the ranks: the loss above
        return loss
