"""Policy configuration (structured configs); the named size presets live in configs/policy/.

``encoder.kind`` picks the registered observation encoder (:mod:`policies.encoder_api`) in front of
the shared diffusion action head: ``enerverse`` (EnerVerse-A: future-space features from the
generator's first level or middle block), ``cnn`` (the Diffusion-Policy-style image baseline) or
``fused`` (both). Everything else - head, memory frames, views - is shared, so they are compared on
equal terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from enerverse.core.config import ConfigError
from enerverse.core.presets import load_preset


@dataclass
class EncoderConfig:
    """Observation encoder in front of the action head."""

    kind: str = "enerverse"
    """enerverse (generator features, EnerVerse-A) | cnn (image baseline) | fused (both)"""
    block: str = "first"
    """enerverse: which generator block is read: first (the first down level, at latent resolution) |
    mid (the middle block, as in the paper; at 64 px it is 4x4 and loses the small objects) |
    first+mid (both scales, one token set each, summed)"""
    noise_level: float = 1.0
    """enerverse: the future frames' diffusion timestep at the one generator forward, as a fraction of
    the schedule (1: the noisiest, the paper's; their input is pure noise either way)"""
    pool: str = "keypoints"
    """enerverse: how the features [V, C, h, w] of a frame become one token: keypoints (a small conv,
    spatial-softmax keypoints and the mean, per view) | keypoints_linear (the same with one 1x1 conv:
    a quarter of the pooling time) | attention (a learned query over views and positions) | mean (over
    views and space, the paper's)"""
    cnn_width: int = 32
    """cnn: channels of the first conv layer (doubled at each of the 3 stride-2 stages)"""
    image_frames: int | None = None
    """cnn / fused: how many of the newest memory frames the CNN reads (None: all n_memory). The fused
    variant reads the current observation (1) next to the future-space tokens, which carry the
    memory; each image frame costs a CNN pass per view, the bulk of a baseline training step"""
    shift: int = 4
    """cnn: random-shift augmentation in training, in pixels (each image is translated by up to this
    much with edge padding, the random crop of Diffusion Policy); 0 = off"""
    feature_shift: float = 0.0
    """enerverse: the same augmentation in feature space (the frozen generator's features are computed
    once, so the images cannot be shifted): each cached feature map is translated in training by a
    random real offset of up to this many input pixels (bilinear, edge padding); 0 = off"""
    token_stride: int = 1
    """enerverse / fused: read every n-th frame of the generator's window (memory + future frames),
    counted back from the last future frame, so the current frame stays in; the pooling of the
    feature maps is most of an EnerVerse-A training step and scales with the frames read. The chunk
    length must be a multiple of it"""
    future_gate: bool = False
    """fused: the future-space tokens enter scaled by tanh(g), a learned g that starts at 0, so the
    fused policy starts as the image baseline and takes in the imagined future only as far as it
    lowers the loss (a Flamingo-style gate)"""


@dataclass
class HeadConfig:
    """The DiT action head (x0 prediction, DDIM sampling)."""

    dim: int = 128
    depth: int = 4
    heads: int = 4
    horizon: int = 8
    """actions per chunk"""
    action_dim: int = 7
    train_timesteps: int = 100
    sample_steps: int = 10
    """DDIM steps per chunk at inference"""
    dropout: float = 0.0


@dataclass
class PolicyConfig:
    """Everything that defines a policy checkpoint (besides the generator it reads, if any)."""

    preset: str = "tiny"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    views: list[str] | None = None
    """camera views used, by name (None: every view of the training store, in store order)"""
    n_memory: int = 4
    """observation frames per decision: 3 from the history + the latest (as the generator's memory)"""
    memory_mode: str = "sparse"
    """sparse (spread over the whole episode) | consecutive (the latest frames; the ablation)"""
    use_state: bool = True
    """proprioception token for the head"""
    use_instruction: bool = True
    """instruction tokens for the head"""
    aux_weight: float = 0.0
    """weight of an auxiliary training loss: regress the simulator's object state (the store's
    ``privileged`` array, standardised) at the decision frame from that frame's observation token. It
    teaches the encoder where the objects are far faster than the action loss alone; the policy never
    reads that state. 0 = off (stores without ``privileged``, e.g. real-robot data)"""
    aux_condition: bool = False
    """give the action head the auxiliary head's object-state estimate (made from the observation
    tokens, never the simulator's state) as one more condition token, so it need not learn to decode
    where the objects are itself (needs aux_weight > 0; our addition, not the paper's)"""
    aux_teacher: float = 0.0
    """training only, with aux_condition: the fraction of training samples whose estimate token reads
    the simulator's object state (standardised, + Gaussian noise of ``aux_teacher_noise``) in place of
    the auxiliary head's estimate, so the head learns to act on the token from the first step instead
    of waiting for the estimate to become good. Inference always reads the estimate. 0 = off"""
    aux_teacher_noise: float = 0.1
    """standard deviation of the noise on the teacher's object state, in standardised units (about the
    auxiliary head's held-out error, so the head learns to tolerate it)"""

    def validate(self) -> None:
        from policies.encoder_api import encoder_kinds

        if self.encoder.kind not in encoder_kinds():
            raise ConfigError(
                f"encoder.kind must be one of {', '.join(encoder_kinds())}, got {self.encoder.kind!r}"
            )
        pools = ("keypoints", "keypoints_linear", "attention", "mean")
        if self.encoder.pool not in pools:
            raise ConfigError(f"encoder.pool must be one of {', '.join(pools)}, got {self.encoder.pool!r}")
        blocks = self.encoder.block.split("+")
        if not set(blocks) <= {"first", "mid"} or len(set(blocks)) != len(blocks):
            raise ConfigError(
                f"encoder.block must be 'first', 'mid' or 'first+mid', got {self.encoder.block!r}"
            )
        if not 0.0 < self.encoder.noise_level <= 1.0:
            raise ConfigError(f"encoder.noise_level must be in (0, 1], got {self.encoder.noise_level}")
        if self.memory_mode not in ("sparse", "consecutive"):
            raise ConfigError(f"memory_mode must be 'sparse' or 'consecutive', got {self.memory_mode!r}")
        h = self.head
        if h.dim % h.heads:
            raise ConfigError(f"head.dim {h.dim} must be a multiple of head.heads {h.heads}")
        for k in ("horizon", "action_dim", "train_timesteps", "sample_steps", "depth"):
            if getattr(h, k) <= 0:
                raise ConfigError(f"head.{k} must be positive, got {getattr(h, k)}")
        if h.sample_steps > h.train_timesteps:
            raise ConfigError(
                f"head.sample_steps {h.sample_steps} > head.train_timesteps {h.train_timesteps}"
            )
        if self.encoder.shift < 0:
            raise ConfigError(f"encoder.shift must be >= 0, got {self.encoder.shift}")
        if not self.encoder.feature_shift >= 0:
            raise ConfigError(f"encoder.feature_shift must be >= 0 pixels, got {self.encoder.feature_shift}")
        if self.encoder.token_stride < 1:
            raise ConfigError(f"encoder.token_stride must be >= 1, got {self.encoder.token_stride}")
        if self.encoder.future_gate and self.encoder.kind != "fused":
            raise ConfigError(
                "encoder.future_gate gates the fused encoder's future tokens; "
                f"encoder.kind is {self.encoder.kind!r}"
            )
        if not self.aux_weight >= 0:
            raise ConfigError(f"aux_weight must be >= 0, got {self.aux_weight}")
        if self.aux_condition and not self.aux_weight > 0:
            raise ConfigError("aux_condition=true reads the auxiliary head: it needs aux_weight > 0")
        if not 0.0 <= self.aux_teacher <= 1.0:
            raise ConfigError(f"aux_teacher must be in [0, 1], got {self.aux_teacher}")
        if self.aux_teacher > 0 and not self.aux_condition:
            raise ConfigError("aux_teacher > 0 replaces the estimate token: it needs aux_condition=true")
        if not self.aux_teacher_noise >= 0:
            raise ConfigError(f"aux_teacher_noise must be >= 0, got {self.aux_teacher_noise}")
        f = self.encoder.image_frames
        if f is not None and not 1 <= f <= self.n_memory:
            raise ConfigError(
                f"encoder.image_frames must be in [1, n_memory={self.n_memory}] or null, got {f}"
            )
        if self.n_memory < 1:
            raise ConfigError(f"n_memory must be >= 1, got {self.n_memory}")
        if self.views is not None and len(set(self.views)) != len(self.views):
            raise ConfigError(f"views must be distinct, got {self.views}")


def get_policy_preset(name: str) -> PolicyConfig:
    """A fresh copy of policy preset ``name`` (``configs/policy/<name>.yaml``, the one home of the
    presets); ConfigError listing the valid names otherwise."""
    return load_preset(PolicyConfig, "policy", name)
