"""The GAN's math on hand-computed cases: hinge and least-squares losses, each DiffAugment op, spectral norm, EMA.
Every expected number here is worked out in the comment beside it, not read back from the code."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from medsyn.generators import acgan, augment, cgan
from medsyn.generators.steps import update_ema


class FirstPixelScores(nn.Module):
    """A stand-in discriminator whose score is the image's first pixel, so losses can be computed by hand.
    With `logits`, it also returns those class logits for every image (the acgan discriminator's second head).
    For cgan it is split as the real one is (features, then score); with `aux_weight` > 0 its class head
    (`classify`) gives `logits` for every image."""

    def __init__(self, logits: list[float] | None = None, aux_weight: float = 0.0):
        super().__init__()
        self.logits, self.aux_weight = logits, aux_weight
        self.classify = (lambda h: torch.tensor(logits).expand(len(h), -1)) if aux_weight > 0 else None

    def features(self, x):
        return x.flatten(1)

    def score(self, h, y):
        return h[:, 0]

    def forward(self, x, y=None):
        scores = x.flatten(1)[:, 0]
        if self.logits is None:
            return scores
        return scores, torch.tensor(self.logits).expand(len(x), -1)

    def l2_penalty(self):
        return torch.tensor(0.0)


def images(first_pixels: list[float]) -> torch.Tensor:
    x = torch.zeros(len(first_pixels), 1, 4, 4)
    x[:, 0, 0, 0] = torch.tensor(first_pixels)
    return x


def test_hinge_losses_on_hand_computed_scores():
    real, fake, y = images([2.0, 0.5, -1.0]), images([-2.0, 0.0, 1.5]), torch.zeros(3, dtype=torch.long)
    d_loss, stats = cgan.discriminator_loss(FirstPixelScores(), real, fake, y, y)
    # mean(relu(1 - [2, .5, -1])) + mean(relu(1 + [-2, 0, 1.5])) = mean(0, .5, 2) + mean(0, 1, 2.5) = 5/6 + 7/6
    assert float(d_loss) == pytest.approx(2.0)
    assert float(stats["real_sign"]) == pytest.approx(1 / 3)  # signs +1, +1, -1
    g_loss, _ = cgan.generator_loss(None, FirstPixelScores(), fake, y)
    assert float(g_loss) == pytest.approx(1 / 6)  # -mean(-2, 0, 1.5)


def test_cgan_auxiliary_class_head_adds_its_weighted_cross_entropy_to_both_hinge_losses():
    real, fake = images([2.0, 0.5, -1.0]), images([-2.0, 0.0, 1.5])
    y_real, y_fake = torch.tensor([0, 1, 1]), torch.tensor([1, 0, 0])
    head = FirstPixelScores(logits=[math.log(3.0), 0.0], aux_weight=0.5)  # softmax (3/4, 1/4) for every image
    d_loss, stats = cgan.discriminator_loss(head, real, fake, y_real, y_fake)
    # D: hinge 2.0 (as above) + 0.5 x CE on the REAL labels (0, 1, 1): -(log 3/4 + 2 log 1/4) / 3
    d_ce = -(math.log(0.75) + 2 * math.log(0.25)) / 3
    assert float(stats["d_aux"]) == pytest.approx(d_ce)
    assert float(d_loss) == pytest.approx(2.0 + 0.5 * d_ce)
    # G: -mean(-2, 0, 1.5) = 1/6, + 0.5 x CE on the intended labels (1, 0, 0): -(log 1/4 + 2 log 3/4) / 3
    g_ce = -(math.log(0.25) + 2 * math.log(0.75)) / 3
    g_loss, g_stats = cgan.generator_loss(None, head, fake, y_fake)
    assert float(g_stats["g_aux"]) == pytest.approx(g_ce)
    assert float(g_loss) == pytest.approx(1 / 6 + 0.5 * g_ce)


def test_cgan_without_aux_weight_has_no_class_head_and_the_plain_hinge_losses():
    torch.manual_seed(0)
    _, discriminator = cgan.networks(28, 1, 2, latent_dim=16, width=4)
    assert discriminator.classify is None
    assert not any("classify" in key for key in discriminator.state_dict()), "old checkpoints' D still loads"
    torch.manual_seed(0)
    _, with_head = cgan.networks(28, 1, 2, latent_dim=16, width=4, aux_weight=1.0)
    shared = {k: v for k, v in with_head.state_dict().items() if "classify" not in k}
    assert all(torch.equal(v, discriminator.state_dict()[k]) for k, v in shared.items()), "the head is drawn last"
    real, fake, y = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 0, 1])
    discriminator.eval()  # no power iteration, so both calls see the same weights
    d_loss, stats = cgan.discriminator_loss(discriminator, real, fake, y, y)
    expected = (1 - discriminator(real, y)).relu().mean() + (1 + discriminator(fake, y)).relu().mean()
    assert torch.equal(d_loss, expected) and "d_aux" not in stats
    g_loss, g_stats = cgan.generator_loss(None, discriminator, fake, y)
    assert torch.equal(g_loss, -discriminator(fake, y).mean()) and g_stats == {}


def test_cgan_auxiliary_cross_entropy_reaches_the_generator_and_trains_the_head_on_real_labels():
    torch.manual_seed(0)
    generator, discriminator = cgan.networks(28, 1, 2, latent_dim=16, width=4, aux_weight=1.0)
    y = torch.tensor([0, 1, 0, 1])
    fake = generator(torch.randn(4, 16), y)
    _, stats = cgan.generator_loss(generator, discriminator, fake, y)
    stats["g_aux"].backward()  # the auxiliary term alone
    missing = [name for name, p in generator.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"the auxiliary cross-entropy does not reach {missing}"
    discriminator.zero_grad()
    d_loss, _ = cgan.discriminator_loss(discriminator, torch.randn(4, 1, 28, 28), fake.detach(), y, y)
    d_loss.backward()
    head = discriminator.classify.parametrizations.weight.original
    assert head.grad is not None and float(head.grad.abs().sum()) > 0


def test_minibatch_std_is_the_spread_of_each_group_of_consecutive_images():
    h = torch.zeros(6, 3, 2, 2)
    h[1] = 2.0                    # group (0, 1): every feature 0 and 2, standard deviation 1
    h[2:4] = 5.0                  # group (2, 3): two identical images, 0
    h[4], h[5] = -1.0, 3.0        # group (4, 5): 2
    std = cgan.minibatch_std(h, 2)
    assert std.shape == (6, 1, 2, 2) and bool((std == std[:, :, :1, :1]).all())  # one value per image
    assert std[:, 0, 0, 0].tolist() == pytest.approx([1, 1, 0, 0, 2, 2], abs=1e-3)
    # 6 images do not divide into groups of 4: groups of 3, (0, 2, 5) and (5, -1, 3)
    assert cgan.minibatch_std(h, 4)[:, 0, 0, 0].tolist() == pytest.approx(
        [math.sqrt(38 / 9)] * 3 + [math.sqrt(56 / 9)] * 3, abs=1e-3)


def test_a_discriminator_with_minibatch_std_scores_an_image_with_its_group_only():
    torch.manual_seed(0)
    _, plain = cgan.networks(28, 1, 2, latent_dim=16, width=4)
    torch.manual_seed(0)
    _, with_std = cgan.networks(28, 1, 2, latent_dim=16, width=4, mbstd_group=4)
    assert not any("mbstd" in key for key in plain.state_dict()), "old checkpoints' D still loads"
    shared = {k: v for k, v in with_std.state_dict().items() if "mbstd" not in k}
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in shared.items()), "the layer is drawn last"
    plain.eval(), with_std.eval()  # no power iteration, so every call sees the same weights
    x, y = torch.randn(8, 1, 28, 28), torch.tensor([0, 1] * 4)
    changed = x.clone()
    changed[3] += 1.0
    moved = with_std(changed, y) != with_std(x, y)
    assert moved.tolist() == [True] * 4 + [False] * 4   # image 3's group (0-3) sees it, the next group does not
    assert (plain(changed, y) != plain(x, y)).tolist() == [False] * 3 + [True] + [False] * 4


def test_least_squares_and_class_losses_of_acgan_on_hand_computed_scores():
    real, fake = images([1.0, 0.5]), images([0.0, 0.25])
    y_real, y_fake = torch.tensor([0, 1]), torch.tensor([1, 0])
    even = FirstPixelScores(logits=[0.0, 0.0])  # softmax (1/2, 1/2) for every image
    d_loss, stats = acgan.discriminator_loss(even, real, fake, y_real, y_fake)
    # real/fake: mean((1-1)^2, (1-.5)^2, (0-0)^2, (0-.25)^2) = (0 + .25 + 0 + .0625) / 4 = 0.078125
    # class: binary cross-entropy of (1/2, 1/2) against any one-hot target = -log(1/2) = log 2
    assert float(d_loss) == pytest.approx(0.078125 + math.log(2))
    assert float(stats["d_class"]) == pytest.approx(math.log(2))
    g_loss, _ = acgan.generator_loss(FirstPixelScores(), even, fake, y_fake)
    assert float(g_loss) == pytest.approx((1.0 + 0.75**2) / 2 + math.log(2))  # mean((1-0)^2, (1-.25)^2)
    sure = FirstPixelScores(logits=[20.0, -20.0])  # p = (1 - 4e-18, 4e-18), clipped to (1 - 1e-7, 1e-7)
    _, stats = acgan.discriminator_loss(sure, real, fake, torch.zeros(2, dtype=torch.long),
                                        torch.zeros(2, dtype=torch.long))
    clipped = float(torch.tensor(1 - 1e-7, dtype=torch.float32))  # 1 - 1.19e-7 in float32
    assert float(stats["d_class"]) == pytest.approx(-math.log(clipped), rel=1e-3)  # not log(4e-18): the clip holds


def test_translation_moves_a_pixel_by_at_most_an_eighth_of_the_side_and_keeps_it():
    torch.manual_seed(0)
    x = torch.zeros(4000, 1, 28, 28)
    x[:, 0, 14, 14] = 1.0
    out = augment.translation(x)
    assert torch.equal(out.sum(dim=(1, 2, 3)), torch.ones(4000)), "the pixel moves, it is neither lost nor blurred"
    where = out[:, 0].flatten(1).argmax(1)
    dy, dx = where // 28 - 14, where % 28 - 14
    limit = round(28 * 0.125)  # 4 px
    assert int(dy.abs().max()) == int(dx.abs().max()) == limit
    assert len(set(dy.tolist())) == len(set(dx.tolist())) == 2 * limit + 1  # every shift in [-4, 4] occurs


def test_colour_ops_stay_in_their_ranges():
    torch.manual_seed(0)
    flat = torch.zeros(4000, 3, 8, 8)
    offset = augment.brightness(flat)[:, 0, 0, 0]  # + U[-0.5, 0.5) per image
    assert float(offset.min()) > -0.5 - 1e-6 and float(offset.max()) < 0.5
    assert float(offset.min()) < -0.49 and float(offset.max()) > 0.49
    colour = torch.zeros(4000, 3, 8, 8)
    colour[:, 0] = 1.0  # channel mean 1/3: saturation scales (x - 1/3) by U[0, 2)
    factor = (augment.saturation(colour)[:, 0, 0, 0] - 1 / 3) / (2 / 3)
    assert float(factor.min()) >= 0 and float(factor.max()) < 2 and float(factor.max()) > 1.98
    stripes = torch.zeros(4000, 1, 8, 8)
    stripes[..., ::2] = 1.0  # image mean 1/2: contrast scales (x - 1/2) by U[0.5, 1.5)
    factor = (augment.contrast(stripes)[:, 0, 0, 0] - 0.5) / 0.5
    assert float(factor.min()) >= 0.5 - 1e-6 and float(factor.max()) < 1.5
    assert float(factor.min()) < 0.51 and float(factor.max()) > 1.49


def test_cutout_zeroes_one_square_of_half_the_side():
    torch.manual_seed(0)
    out = augment.cutout(torch.ones(2000, 1, 28, 28))[:, 0]
    zeros = (out == 0)
    area = zeros.sum(dim=(1, 2))
    assert int(area.max()) == 14 * 14 and int(area.min()) > 0
    assert float((area == 196).float().mean()) > 0.2  # squares fully inside the image are common
    rows, cols = zeros.any(2).sum(1), zeros.any(1).sum(1)
    assert torch.equal(rows * cols, area), "the zeroed pixels form one axis-aligned rectangle (a clipped square)"


def test_gradients_reach_every_generator_weight_through_diffaugment():
    torch.manual_seed(0)
    generator, discriminator = cgan.networks(28, 1, 2, latent_dim=16, width=4)
    y = torch.tensor([0, 1, 0, 1])
    policy = augment.DiffAugment("color,translation,cutout", p=1.0)
    loss, _ = cgan.generator_loss(generator, discriminator, policy(generator(torch.randn(4, 16), y)), y)
    loss.backward()
    missing = [name for name, p in generator.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient through DiffAugment to {missing}"


def test_spectral_norm_keeps_the_largest_singular_value_of_every_discriminator_weight_at_one():
    torch.manual_seed(0)
    _, discriminator = cgan.networks(28, 1, 2, latent_dim=16, width=4)
    x, y = torch.randn(8, 1, 28, 28), torch.tensor([0, 1] * 4)
    for _ in range(100):  # power iterations run in training mode, one per forward pass
        discriminator(x, y)
    normalised = [m for m in discriminator.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert len(normalised) >= 5 and all(hasattr(m, "parametrizations") for m in normalised), "every layer of D"
    for module in normalised:
        sigma = torch.linalg.matrix_norm(module.weight.detach().flatten(1), ord=2)
        raw = torch.linalg.matrix_norm(module.parametrizations.weight.original.detach().flatten(1), ord=2)
        assert float(sigma) == pytest.approx(1.0, abs=5e-3) and abs(float(raw) - 1) > 0.05


def test_ema_moves_a_fraction_one_minus_decay_towards_the_weights_and_copies_buffers():
    ema, model = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        ema.weight.fill_(0.0)
        model.weight.fill_(1.0)
        model.running_mean.fill_(3.0)
    update_ema(ema, model, decay=0.9)
    assert torch.allclose(ema.weight, torch.full((2,), 0.1))           # 0 + (1 - 0.9) * (1 - 0)
    update_ema(ema, model, decay=0.9)
    assert torch.allclose(ema.weight, torch.full((2,), 0.19))          # 0.1 + 0.1 * (1 - 0.1)
    assert torch.equal(ema.running_mean, model.running_mean)           # batch-norm statistics are copied
