"""Generator configuration (structured configs); the named size presets live in configs/generator/.

Presets (docs/design.md §3 "Presets"): ``tiny`` for unit tests (seconds on CPU), ``small`` for CPU training
at the default 128x128 (f8 codec with 8 channels: a 16x16 latent grid, attention at the 8x8 level,
frame stride 2), ``base`` for one GPU at 256x256 through a pretrained-style f8 KL codec, ``paper`` with the
UNet width/depth of the paper (320 channels, multipliers 1-2-4-4; config only until a GPU run).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from enerverse.core.config import ConfigError
from enerverse.core.presets import load_preset


@dataclass
class CodecConfig:
    """Latent codec: the project's conv autoencoder, or a diffusers AutoencoderKL from a local folder."""

    kind: str = "conv"
    """conv | diffusers_kl"""
    channels: int = 32
    """base width of the conv autoencoder"""
    latent_channels: int = 4
    factor: int = 8
    """spatial downsampling (64x64 -> 8x8 at f8)"""
    path: str | None = None
    """local diffusers AutoencoderKL folder (kind=diffusers_kl)"""
    object_weight: float = 0.0
    """extra reconstruction weight on object pixels (the store's segmentation masks; colourful pixels
    when a store has none); 0 = plain per-pixel loss"""


@dataclass
class DenoiserConfig:
    """The multi-view video denoiser (U-shaped; see enerverse.denoiser)."""

    width: int = 64
    """channels at the first level"""
    channel_mult: list[int] = field(default_factory=lambda: [1, 2])
    num_res_blocks: int = 1
    attention_levels: list[int] = field(default_factory=lambda: [0, 1])
    """levels (0 = full latent resolution) that get spatial/temporal/cross attention"""
    head_channels: int = 32
    temporal_kernel: int = 3
    text_dim: int = 384
    """instruction token width (384 for all-MiniLM-L6-v2)"""
    num_domains: int = 0
    """optional domain embeddings added to the timestep embedding (0: off)"""
    max_frame_offset: int = 512
    """relative frame positions are embedded up to this distance"""
    dropout: float = 0.0


@dataclass
class DiffusionConfig:
    """v-prediction diffusion with the paper's linear beta schedule and trailing-spaced DDIM."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    sample_steps: int = 10
    """DDIM steps per chunk at inference"""
    guidance_scale: float = 1.0
    """classifier-free guidance on the instruction (1.0: off)"""
    uncond_prob: float = 0.1
    """instruction dropout in training, enabling guidance"""
    sparse_view_prob: float = 0.2
    """share of training samples in sparse-view mode: a random proper subset of the views is given
    clean (t = 0) and left out of the loss, as the data engine's view filling asks at inference"""
    motion_weight: float = 0.0
    """training: extra loss weight where the future latents change from the latest memory frame; the
    position that changes most in a sample weighs 1 + motion_weight, a static one 1 (0: plain loss)"""


@dataclass
class MemoryConfig:
    """Sparse memory across chunks (or consecutive context for the ablation)."""

    chunk: int = 8
    """M future frames predicted per chunk"""
    n_memory: int = 4
    """clean context frames: 3 sampled from the history + the latest"""
    mode: str = "sparse"
    """sparse | consecutive"""
    train_uniform_prob: float = 0.0
    """sparse mode, training: the share of windows whose memory is spread evenly from the episode's
    first frame (the layout generation uses) instead of random history frames"""
    corruption: bool = True
    """cosine-scheduled noise on memory frames in training, growing toward the present"""
    max_corruption_div: int = 20
    min_corruption_div: int = 3


TRAINING_ONLY = (
    ("codec", "object_weight"),
    ("diffusion", "uncond_prob"),
    ("diffusion", "sparse_view_prob"),
    ("diffusion", "motion_weight"),
    ("memory", "train_uniform_prob"),
    ("memory", "corruption"),
    ("memory", "max_corruption_div"),
    ("memory", "min_corruption_div"),
)
"""(group, key) of generator settings that shape training samples or losses only: init_from and
codec_from may change them."""


@dataclass
class GeneratorConfig:
    """Everything that defines a generator checkpoint."""

    preset: str = "tiny"
    resolution: int = 64
    num_views: int = 3
    codec: CodecConfig = field(default_factory=CodecConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    frame_stride: int = 1
    """the generator's frames are every k-th recorded frame (k = 1: the 20 Hz control rate); a chunk of
    8 frames then spans 8 k control steps"""
    text_encoder: str = "minilm"
    """minilm (offline all-MiniLM-L6-v2) | hashing (tests) | hf (needs text_model_path)"""
    text_model_path: str | None = None
    eos_threshold: float = 0.15
    """generation stops when the mean L1 distance of a latent frame to the EoS latent is below this"""

    def validate(self) -> None:
        """Check values that would otherwise fail deep inside the model."""
        f = self.codec.factor
        if f < 2 or f & (f - 1):
            raise ConfigError(f"codec.factor must be a power of 2 (e.g. 4, 8, 16), got {f}")
        if self.resolution % self.codec.factor:
            raise ConfigError(
                f"resolution {self.resolution} must be divisible by codec.factor {self.codec.factor}"
            )
        if self.num_views <= 0:
            raise ConfigError(f"num_views must be positive, got {self.num_views}")
        if self.frame_stride < 1:
            raise ConfigError(
                f"frame_stride must be >= 1 (every k-th recorded frame), got {self.frame_stride}"
            )
        if self.memory.mode not in ("sparse", "consecutive"):
            raise ConfigError(f"memory.mode must be 'sparse' or 'consecutive', got {self.memory.mode!r}")
        if self.memory.chunk < 1 or self.memory.n_memory < 1:
            raise ConfigError(
                f"memory.chunk and memory.n_memory must be >= 1, got {self.memory.chunk} and "
                f"{self.memory.n_memory}"
            )
        if not 0.0 <= self.memory.train_uniform_prob <= 1.0:
            raise ConfigError(
                f"memory.train_uniform_prob must be in [0, 1], got {self.memory.train_uniform_prob}"
            )
        d = self.denoiser
        if d.width % d.head_channels:
            raise ConfigError(
                f"denoiser.width {d.width} must be a multiple of head_channels {d.head_channels}"
            )
        latent = self.resolution // self.codec.factor
        if latent % (2 ** (len(d.channel_mult) - 1)):
            raise ConfigError(f"latent size {latent} cannot be halved {len(d.channel_mult) - 1} times")


def get_preset(name: str) -> GeneratorConfig:
    """A fresh copy of preset ``name`` (``configs/generator/<name>.yaml``, the one home of the presets);
    ConfigError listing the valid names otherwise."""
    return load_preset(GeneratorConfig, "generator", name)
