"""Every knob as a plain dataclass value, and the presets `smoke`, `quick` (default), `study` and `full`.

A preset is a function of nothing: it returns a `RunConfig`. Command-line flags then replace single fields
(cli/flags.py's table), and the resulting config is saved as JSON next to every output it produced.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Sequence

from medsyn.errors import MedsynError

PRESETS = ("smoke", "quick", "study", "full")
ASPECT_POLICIES = ("center-crop", "pad", "stretch")


@dataclass(frozen=True)
class DataConfig:
    size: int | None = None            # None keeps the source's own size (the most common one for folders)
    channels: int | None = None        # 1 or 3; None keeps the source's own
    aspect: str = "center-crop"        # how a non-square image becomes square: center-crop | pad | stretch
    val_fraction: float = 0.1          # share of train carved out as validation when the source gives too few
    val: str = "auto"                  # auto | given | carve: whether to keep the source's own val split
    split_seed: int = 0
    skip_bad: bool = False             # skip unreadable images (recorded) instead of failing
    leak: str = "error"                # near-copies across the given splits: error | resplit | allow (data/leaks.py)


GAN_MODELS = ("cgan", "acgan", "ddpm")  # ddpm: a diffusion model, trained and used as a generator
GAN_SIZES = (28, 32, 64, 128, 224)


@dataclass(frozen=True)
class GanConfig:
    model: str = "cgan"                # cgan | acgan | ddpm
    size: int = 28
    steps: int = 800                   # generator steps
    batch_size: int = 32               # images per step, summed over all processes
    base_width: int = 8                # channel multiplier of both networks (acgan: filters of its last block)
    latent_dim: int = 100
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    ema_decay: float = 0.99            # EMA of the generator weights; 0 = sample from the raw generator
    diffaugment: str = "color,translation,cutout"  # applied to real and fake before D; "" = none
    augment_p: float = 1.0             # probability of each augmentation per image (the start value when adaptive)
    ada_target: float = 0.0            # > 0: adapt augment_p so that E[sign D(real)] tracks this value (ADA)
    r1_gamma: float = 0.0              # R1 penalty on real images, applied lazily every 16 steps; 0 = off
    mbstd_group: int = 0               # cgan: D's minibatch standard deviation layer over groups of this many
                                       # images (StyleGAN), a push towards varied samples; 0 = none
    aux_weight: float = 0.0            # cgan: weight of an auxiliary class head's cross-entropy on D's features
                                       # (D: real labels, G: intended labels); 0 = no head (the older cgan)
    guidance: float = 0.0              # ddpm: classifier-free guidance scale when sampling; 0 = plain conditional
    label_dropout: float = 0.1         # ddpm: share of training labels replaced by the null class (for guidance)
    sampling_steps: int = 25           # ddpm: DPM-Solver++ steps per image
    snapshot_every: int = 200          # sample grid + checkpoint every K steps
    log_every: int = 10
    amp: bool = True                   # mixed precision (bfloat16, or float16 with loss scaling) on GPU
    device: str = "auto"               # auto | cpu | cuda
    seed: int = 0
    init: str | None = None            # start from this checkpoint of another source and fine-tune it
                                       # (generators/transfer.py); None: fresh weights


STUDY_GAN_STEPS = 400
QUICK_LARGE_SIZE = 64  # px: from this size up the quick preset's generator and classifier are cheaper (issue 20's time
                       # plan for a folder at 64 px on a 2-core CPU)


def gan_preset(name: str, model: str = "cgan", size: int | None = None) -> GanConfig:
    """GAN settings per preset and model, at `size` px (default: the preset's). acgan keeps the original optimiser
    settings (RMSprop 1e-4 / 5e-5, no augmentation, no EMA); only its width and resolution are scaled."""
    if model not in GAN_MODELS:
        raise MedsynError(f"unknown GAN model {model!r}; choose one of {', '.join(GAN_MODELS)}.")
    if name not in PRESETS:
        raise MedsynError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    study, name = name == "study", {"study": "quick"}.get(name, name)  # the study's generators are the quick ones
    sizes = {"smoke": dict(size=28, steps=20, batch_size=16, base_width=8, snapshot_every=10, log_every=5),
             "quick": dict(size=28, steps=800, batch_size=32, base_width=8, snapshot_every=200),
             "full": dict(size=128, steps=50_000, batch_size=64, base_width=64, snapshot_every=2000, log_every=50)}
    if model == "ddpm":
        return _ddpm_preset(name, sizes[name])
    if model == "acgan":
        original = dict(lr_g=5e-5, lr_d=1e-4, ema_decay=0.0, diffaugment="")
        widths = {"smoke": 4, "quick": 4, "full": 32}  # 32 = the original's 256-128-64-32 filters
        schedule = {"full": dict(steps=15_000, batch_size=64)}  # the original's 15,000 steps x batch 64
        return GanConfig(model=model, **{**sizes[name], "base_width": widths[name], **schedule.get(name, {})},
                         **original)
    # cgan quick: width 12 was chosen with benchmarks/gan_quality.py over width 8 and 16 (more steps beat more
    # width). At 28 px cutout (half the side) hides most of the chest; colour augmentation cost label fidelity and
    # FID at equal time (benchmarks/results/gan_quality_sweep_2026-12-01.json), so only translation is applied.
    # A quick run trains two generators side by side on one thread each, 1000 steps each: about a third of the
    # run's time (a measured run: benchmarks/results/plan_accuracy_bundled-quick_2026-12-01.json).
    # The auxiliary class head with Adam at 5e-4 for both networks was chosen on train/val at these 1000 steps for
    # its label fidelity (the head alone at lr 2e-4 moved little): benchmarks/results/gan_quality_tuning_2026-12-01.json;
    # at equal time beside the older cgan and acgan: benchmarks/results/gan_quality_2026-12-01.json.
    # The minibatch standard deviation layer (groups of 8, over 4 and 2) was chosen on train/val for the normal
    # class's recall, which no schedule, EMA or head weight moved:
    # benchmarks/results/gan_quality_mbstd_sweep_2026-12-01.json.
    # It makes a step dearer (study/plan.py's MBSTD_STEP_COST); at 900 steps (the time 1000 took without it) one of
    # two seeds fell short of issue 19's recall target, at 1000 neither did
    # (benchmarks/results/gan_quality_mbstd_2026-12-01.json).
    # ema_decay 0.995 stays above the EMA's warm-up, (1 + step) / (10 + step), for all 1000 steps: the warm-up sets
    # the average (0.999 gave the same generator).
    tuned = {"quick": dict(steps=1000, base_width=12, snapshot_every=500, diffaugment="translation",
                           ema_decay=0.995, aux_weight=0.3, lr_g=5e-4, lr_d=5e-4, mbstd_group=8)}
    config = GanConfig(model=model, **{**sizes[name], **tuned.get(name, {})})
    if size is not None and name == "quick" and size >= QUICK_LARGE_SIZE:
        # A step at 64 px costs about 5x one at 28 px: half the steps keep a 64 px quick run within issue 20's time
        # plan, chosen on train/val: benchmarks/results/gan_quality_chest_xray_224_64px_half_2026-12-01.json.
        # There the minibatch std layer raised recall but mislabelled the normal class (label fidelity 0.96 -> 0.91,
        # NORMAL 0.85 -> 0.61: benchmarks/results/gan_quality_chest_xray_224_64px_mbstd_2026-12-01.json), so not.
        config = replace(config, steps=config.steps // 2, snapshot_every=config.snapshot_every // 2, mbstd_group=0)
    if study:  # a generator per replicate and curve point (32 of them), so fewer steps, the same at every size
        config = replace(config, steps=STUDY_GAN_STEPS)
    return replace(config, size=size or config.size)


def _ddpm_preset(name: str, schedule: dict) -> GanConfig:
    """ddpm per preset. Its cost is UNet evaluations: the quick one trains 6000 steps and samples each image with
    20 guided solver steps (two UNet passes each) where a cgan makes it in one forward pass, far beyond the quick
    budget on a CPU, so `medsyn run` leaves ddpm out unless asked (`--gan ddpm` or `--gan cgan,ddpm`; `--dry-run`
    estimates it on this machine, and benchmarks/gan_speed.py measures its images/s)."""
    common = dict(model="ddpm", diffaugment="", guidance=1.0, label_dropout=0.1)
    tuned = {"smoke": dict(base_width=8, lr_g=2e-3, sampling_steps=5),
             "quick": dict(base_width=8, steps=6000, lr_g=5e-4, ema_decay=0.999, sampling_steps=20,
                           snapshot_every=1000),
             "full": dict(steps=100_000, base_width=64, lr_g=1e-4, ema_decay=0.9999, sampling_steps=25,
                          snapshot_every=5000)}
    return GanConfig(**{**schedule, **common, **tuned[name]})


SELECTIONS = ("val-loss", "last")  # how a classifier run chooses the weights it keeps (ClassifyConfig.selection)


@dataclass(frozen=True)
class ClassifyConfig:
    # The defaults are the quick preset's classifier but for its epochs and patience (preset()); the seconds of
    # one run per arm: benchmarks/classify_quick.py, e.g. benchmarks/results/classify_quick_2026-11-30.json.
    arch: str = "vgg16"                # vgg16 | resnet18
    width: float = 0.125               # channel multiplier of vgg16's conv stack (1.0 = the original); resnet18: 1
    batch_norm: bool = True            # batch norm in vgg16's conv stack (torchvision vgg16_bn)
    pretrained: bool = False           # ImageNet weights from the torchvision cache (width 1 only)
    epochs: int = 5                    # at most; early stopping on real-val loss may end sooner
    patience: int = 3                  # epochs without a lower real-val loss before stopping
    batch_size: int = 64
    lr: float = 1e-3                   # Adam
    weight_decay: float = 0.0
    dropout: float = 0.4               # the head's three dropouts (vgg16)
    class_weighting: bool = False      # weight the training loss by inverse class frequency
    exposure: str = "real-passes"      # real-passes: an epoch is one pass over real train, synthetic images ride
                                       # along at the arm's ratio; equal-steps: one pooled stream, the same steps
    ema_decay: float = 0.0             # > 0: select and keep an exponential moving average of the weights
    selection: str = "val-loss"        # val-loss: the epoch with the lowest real-val loss, early stopping after
                                       # `patience`; last: every epoch, then the final weights (their average when
                                       # ema_decay > 0), so no choice rests on a few val images
    min_epoch_steps: int = 1           # at least this many batches between two validation checks (small subsets)
    device: str = "auto"               # auto (cuda when available, else cpu) | cpu | cuda | cuda:N
    amp: bool = True                   # bfloat16 autocast for the training steps on a GPU that has it (no loss
                                       # scaling needed); the CPU trains in float32
    threads: int = 1                   # CPU threads for torch while training (0: torch's default); small models on
                                       # a shared 2-core CPU run far faster on 1 thread than on 2 contended ones


@dataclass(frozen=True)
class AuditConfig:
    # Every audit number is given in each of these feature spaces (audit/features.py); inception-v3 only
    # when its weights are on disk.
    extractors: tuple[str, ...] = ("label-trained-cnn", "random-cnn", "inception-v3")
    random_cnn_width: int = 32         # the untrained CNN's first block; 4 x width feature dims
    # The label-trained CNN: a small classifier trained on real train, early-stopped on real val; its
    # penultimate layer gives features, its head label fidelity. Cached per (training data, these fields, seed).
    encoder_width: int = 16            # channels of the first block; the feature vector has 4 x width dims
    encoder_epochs: int = 8
    encoder_patience: int = 2          # epochs without a better val loss before stopping
    encoder_batch_size: int = 128
    encoder_lr: float = 2e-3
    encoder_min_epoch_steps: int = 30  # small train splits are passed over several times per epoch: at 235 images
                                       # (2 batches) 8 epochs of one pass left the CNN predicting the majority class
    encoder_max_size: int = 64         # images larger than this are downsized for the encoder
    k: int = 5                         # nearest neighbours for precision/recall/density/coverage
    kid_subsets: int = 100
    kid_subset_size: int = 1000        # shrunk to the smaller set's size when a set (or a class) is smaller
    max_samples: int = 5000            # random subsample per set for FID/KID/PRDC/diversity (memory and time)
    n_memorization: int = 5000         # synthetic images checked for near-copies (all when fewer)
    copy_max_shift: int = 2            # copy search: translations up to this many pixels, and a left-right flip
    near_copy_percentile: float = 1.0  # near-copy: matches a training image better than all but this % of real val
    exact_copy_correlation: float = 0.999  # ... or correlates above this (an exact copy), whichever is lower
    gallery_pairs: int = 16
    inception: str = "auto"            # auto: add Inception-v3 features when their weights are on disk | off
    inception_weights: str | None = None  # a torch-fidelity Inception-v3 .pth; None looks in the torch hub cache
    device: str = "auto"               # where the CNN extractors train and run: auto | cpu | cuda | cuda:N
    seed: int = 0


EXECUTION_ONLY = ("device", "threads")  # where a run runs, not what it is: a resume may change them


@dataclass(frozen=True)
class RunConfig:
    preset: str = "quick"
    data: DataConfig = field(default_factory=DataConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    gans: tuple[str, ...] = ("cgan",)  # every one is trained and audited; the first feeds the classifier arms
    arms: tuple[str, ...] = ("real", "real+aug", "synth", "real+synth@0.5", "real+synth@1", "real+synth@2",
                             "real+balance", "real+aug+synth")
    seeds: tuple[int, ...] = (0, 1, 2)  # one replicate per seed: the classifier seed of every arm
    n_generators: int = 1              # generators of the primary model: replicate r uses generator r mod K
    train_sizes: tuple[float, ...] = (1.0,)  # learning curve over the real train split: fractions (<= 1) or image
                                             # counts (> 1), nested; generators and arms run per size
    imbalance: float = 1.0             # every class but the largest subsampled to this share (1 = as given)
    scale_val: bool = True             # a curve point's val split shrinks with its train subset (False: the whole
                                       # val split at every size, optimistic at small sizes)
    guidance_scales: tuple[float, ...] = ()  # ddpm sampling: () the trained scale; one scale; several: chosen
                                             # among them on real val per generator (audit/guidance.py)
    min_effect: float = 0.01           # smallest difference of interest; a wider CI makes a verdict inconclusive
    unlabelled: str | None = None      # an unlabelled pool (a folder or an .npz, labels ignored) or "rest" (a curve
                                       # point's train images outside its subset, labels dropped): the generators
                                       # and real+pseudo@R learn from it through pseudo-labels (classify/pseudo.py)
    n_bootstrap: int = 2000
    budget_minutes: float | None = None  # the wall time the preset is sized for on a 2-core CPU; a plan that
                                         # exceeds it on this machine says so and offers what would fit

    def generator_of(self, replicate: int) -> int:
        """The generator (of the primary model) that replicate `replicate` (its index, not its seed) draws from."""
        return replicate % self.n_generators

    def gan_config(self, model: str, seed: int) -> GanConfig:
        """The GAN settings of `model` with `seed`: the run's own for the primary model, else that model's preset
        at the run's size and device."""
        base = self.gan if model == self.gan.model else \
            replace(gan_preset(self.preset, model, self.gan.size), device=self.gan.device)
        return replace(base, seed=seed)


# Every preset's run settings but its data size and generator (preset() adds those, at the run's size).
RUN_PRESETS = {
    # for tests
    "smoke": dict(classify=ClassifyConfig(width=0.0625, epochs=1, batch_size=64),  # one tiny epoch
                  audit=AuditConfig(encoder_width=8, encoder_epochs=3, kid_subsets=10, kid_subset_size=200,
                                    max_samples=1000, n_memorization=200, inception="off"),
                  arms=("real", "real+aug", "synth", "real+synth@1"), seeds=(0, 1), n_generators=2, n_bootstrap=200,
                  budget_minutes=3),
    # Sized for budget_minutes on 2 CPU cores: two generators of 1000 steps side by side, then 5 arms x 4
    # replicates on both cores; a measured run: benchmarks/results/plan_accuracy_bundled-quick_2026-11-30.json.
    # Inception-v3 at 299 px is minutes of CPU: the quick preset measures with the domain encoder, which at
    # 32 px scored better on real val than at 64 px (benchmarks/results/audit_encoder_size_2026-12-01.json)
    # in a quarter of the pixels.
    "quick": dict(classify=ClassifyConfig(epochs=6, patience=2),
                  audit=AuditConfig(inception="off", kid_subsets=50, encoder_max_size=32),
                  arms=("real", "real+aug", "synth", "real+synth@1", "real+balance"),
                  seeds=(0, 1, 2, 3), n_generators=2, budget_minutes=15),
    # The small-data question on a CPU: a learning curve over 4 nested sizes of the real train split (2-25%; the
    # whole split is the quick preset's question, and has no held-out images for a positive control), the
    # strategies known to work (mixing, synthetic pretraining, filtering), the positive control (held-out real
    # images at the same dose), 8 replicates with a generator each (generator randomness is replicated too):
    # with 5, a gain of one paired sd could not pass Bonferroni over 4 comparisons (t at 4 df).
    # Classifier recipe chosen on validation data only (benchmarks/small_data_recipe.py, its results files):
    # early stopping on the 13-52 val images of the small sizes made `real` noisy and its curve flat; training
    # 10 epochs and keeping the last weights (round 4) gave a curve that rises with the data, 2-4x less seed
    # noise than 20 epochs with patience 5 (round 1), the same positive-control gain, at half the steps.
    "study": dict(classify=ClassifyConfig(epochs=10, selection="last", min_epoch_steps=20),
                  audit=AuditConfig(inception="off", kid_subsets=20),
                  arms=("real", "real+heldout@1", "real+synth@1", "real+pretrain-synth@1", "real+filtered-synth@1"),
                  seeds=tuple(range(8)), n_generators=8, train_sizes=(0.02, 0.05, 0.1, 0.25), budget_minutes=60),
    # the GPU-sized study at the original's width and resolution
    "full": dict(classify=ClassifyConfig(width=1.0, epochs=60, patience=4, batch_size=64, lr=1e-4, threads=0),
                 audit=AuditConfig(encoder_width=32, encoder_epochs=30, encoder_patience=4, max_samples=10_000,
                                   n_memorization=20_000),
                 arms=("real", "real+aug", "synth", "real+synth@0.5", "real+synth@1", "real+synth@2", "real+balance",
                       "real+aug+synth", "real+pretrain-synth@1", "real+filtered-synth@1"),
                 seeds=tuple(range(10)), n_generators=3, train_sizes=(0.02, 0.05, 0.1, 0.25, 1.0), n_bootstrap=10_000),
}


def preset(name: str = "quick", size: int | None = None) -> RunConfig:
    """The named preset, at `size` px (default: the preset's). `smoke` is for tests, `quick` a real answer on 2 CPU
    cores, `study` the small-data learning curve on a CPU (each within its `budget_minutes`), `full` the GPU-sized
    study at the original's width and resolution."""
    if name not in RUN_PRESETS:
        raise MedsynError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    gan = gan_preset(name, size=size)
    settings = RUN_PRESETS[name]
    if name == "quick" and gan.size >= QUICK_LARGE_SIZE:
        # Half the classifier's width halves its time at 64 px for about 0.002 of val AUC (two seeds, chosen on val:
        # benchmarks/results/classify_width_chest_xray_224_64px_2026-12-01.json).
        settings = {**settings, "classify": replace(settings["classify"], width=settings["classify"].width / 2)}
    return RunConfig(preset=name, data=DataConfig(size=gan.size), gan=gan, **settings)


SEED_MAX = 2 ** 32 - 1      # seeds are numpy's: 0..2^32-1
COUNT_MAX = 10 ** 9          # the default upper bound of a count flag (stated in the message)
MAX_SIZE = 4096              # the largest image side medsyn resizes to (--size), and a saved model may state


def check_number(flag: str, value, low=None, high=None, above: bool = False, whole: bool = False):
    """The one validator for numeric flags and the numbers parsed from list flags: finite, a whole number where
    `whole`, and within [low, high] ((low, high] where `above`); a MedsynError states the allowed range."""
    import math

    kind = "a whole number" if whole else "a number"
    def shown(bound) -> str:
        return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"

    span = (f" {'above' if above else 'from'} {shown(low)}" if low is not None else "") + \
        (f" {'and at most' if above else 'to'} {shown(high)}" if high is not None else "")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
        (isinstance(value, int) or (math.isfinite(value) and (not whole or value.is_integer()))) and \
        (low is None or (value > low if above else value >= low)) and (high is None or value <= high)
    if not ok:
        raise MedsynError(f"{flag} {value}: give {kind}{span}.")
    return int(value) if whole else value


def number(flag: str, low=None, high=None, above: bool = False, whole: bool = True):
    """An argparse `type` for `flag` that validates with `check_number` while the command line is parsed, so a
    bad number stops every verb before it reads data or makes a folder."""
    def parse(text: str):
        try:
            value = int(text) if whole else float(text)
        except ValueError:
            raise MedsynError(f"{flag} {text!r}: not {'a whole number' if whole else 'a number'}.") from None
        return check_number(flag, value, low, high, above, whole)

    parse.__name__ = "whole number" if whole else "number"
    return parse


def seed(flag: str = "--seed"):
    return number(flag, 0, SEED_MAX)


def count(flag: str, high: int = COUNT_MAX, low: int = 1):
    return number(flag, low, high)


def real(flag: str, low=None, high=None, above: bool = False):
    return number(flag, low, high, above, whole=False)


def require_positive(config, names: tuple[str, ...], what: str) -> None:
    """Raise a MedsynError naming the first of `names` that is not > 0."""
    for name in names:
        if not getattr(config, name) > 0:
            raise MedsynError(f"{what} {name} must be greater than 0, not {getattr(config, name)}.")


def check_device(name: str) -> None:
    """Raise a MedsynError unless `name` is a torch device this machine has (auto, cpu, cuda, cuda:N)."""
    import torch

    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise MedsynError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MedsynError(f"--device {name}: no CUDA GPU is visible to torch here; use --device cpu (or auto).")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise MedsynError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s).")
    if device.type not in ("cpu", "cuda"):
        raise MedsynError(f"--device {name}: medsyn runs on cpu or cuda.")


def resolve_device(name: str):
    """The torch device `name` stands for on this machine (auto: the first CUDA GPU when torch sees one, else the
    CPU), after `check_device`'s checks: the one place a device flag becomes a device."""
    import torch

    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_dict(config) -> dict:
    return asdict(config)


AUTO_GUIDANCE_SCALES = (0.0, 0.5, 1.0, 2.0, 4.0)  # `--guidance auto`: chosen among these on real val


def check_guidance_scales(scales: Sequence[float], given: str | None = None) -> tuple[float, ...]:
    """Distinct scales of at least 0, sorted; `given` is how the user wrote them (for the message)."""
    scales = tuple(float(s) for s in scales)
    if not scales or min(scales) < 0 or len(set(scales)) != len(scales):
        shown = given if given is not None else ",".join(f"{s:g}" for s in scales)
        raise MedsynError(f"--guidance {shown!r}: give a scale of at least 0 (e.g. 2), a list of distinct scales to "
                          f"choose from on real val (e.g. 0,1,2,4), or auto ({','.join(f'{s:g}' for s in AUTO_GUIDANCE_SCALES)}).")
    return tuple(sorted(scales))


def fixed_or_chosen(scales: Sequence[float]) -> tuple[float | None, tuple[float, ...]]:
    """Guidance scales as given -> (the one fixed scale or None, the scales to choose among on real val or ()):
    the one rule for "one scale is fixed, several are chosen"."""
    return (float(scales[0]), ()) if len(scales) == 1 else (None, tuple(float(s) for s in scales))
