"""`torchrun --nproc_per_node 2` (CPU, gloo) takes the same GAN training steps as one process on the whole batch.

Both processes draw the global batch (data order, labels, noise, augmentation, dropout masks) from the same seeded
RNGs and keep their half; gradients are averaged and the cgan generator's batch norm uses the global batch's
statistics. acgan (no batch norm) matches to float rounding: measured 1.2e-7 on any weight after 8 steps. For cgan
what is left is also float rounding (sums in another order), and Adam magnifies it where a gradient is itself at rounding level: it
steps every weight by about lr whatever its gradient's size. Biases that feed a batch norm have an exact gradient of
0 (the norm subtracts the batch mean), so under Adam they take rounding-driven steps of +-lr in one process as in
two; they cannot change what the generator computes in training mode, so they (and the running means that track
them) are compared through the generator's images instead. Measured after 8 steps: discriminator weights differ by
at most 6e-7, the other generator weights by 8e-5 (under lr = 2e-4, one Adam step), images by 8e-4 (a tenth of a
grey level).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from medsyn.cli import main
from medsyn.generators.families import FAMILIES

pytestmark = pytest.mark.slow  # each test trains under torchrun (2 processes) and in one process

STEPS, GREY_LEVEL = 8, 2 / 255   # a grey level of [-1, 1] pixels (cgan; acgan's [0, 1] ones: half a level)
DISCRIMINATOR_TOLERANCE = 1e-5
GENERATOR_TOLERANCE = {"cgan": 2e-4, "acgan": 1e-5}  # cgan: its lr, one Adam step (see above)
NOT_COMPARED = {"cgan": re.compile(r"(project|conv1|conv2|skip)\.bias$|running_mean$"), "acgan": re.compile("^$")}
# cgan with adaptive augmentation, so the keep-masks (drawn once p < 1) and the cross-process E[sign D(real)] are
# exercised; acgan has no augmentation but dropout in its discriminator
TRAIN = ["gan", "train", "--preset", "smoke", "--steps", str(STEPS), "--batch-size", "16", "--ada-target", "0.6",
         "--snapshot-every", "4", "--device", "cpu", "--no-progress"]


def largest_difference(a: dict, b: dict, skip=re.compile("^$")) -> float:
    return max(float((a[key].double() - b[key].double()).abs().max())
               for key in a if a[key].is_floating_point() and not skip.search(key))


def images(state: dict, info: dict) -> torch.Tensor:
    """The generator's training-mode output (batch-norm statistics of this batch) on fixed noise and labels."""
    networks = FAMILIES[info["model"]].module.networks
    generator, _ = networks(info["size"], info["channels"], len(info["class_names"]), info["latent_dim"],
                            info["base_width"])
    generator.load_state_dict(state)
    noise = torch.Generator().manual_seed(1)
    with torch.no_grad():
        return generator(torch.randn(64, info["latent_dim"], generator=noise),
                         torch.randint(0, len(info["class_names"]), (64,), generator=noise))


def initial_networks(info: dict) -> tuple[dict, dict]:
    """The weights both runs start from (the trainer seeds torch with the config's seed 0, then builds them)."""
    torch.manual_seed(0)
    networks = FAMILIES[info["model"]].module.networks(info["size"], info["channels"], len(info["class_names"]),
                                                       info["latent_dim"], info["base_width"])
    return tuple(net.state_dict() for net in networks)


@pytest.mark.parametrize("model", ["cgan", "acgan"])
def test_torchrun_two_processes_match_one_process_on_the_global_batch(model, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "medsyn"]
    train = [*TRAIN, "--model", model]
    subprocess.run([*launch, *train, "--out", str(tmp_path / "two")], env=env, check=True, timeout=300)
    assert main([*train, "--out", str(tmp_path / "one")]) == 0

    two = torch.load(tmp_path / "two" / "final.pt", weights_only=True)
    one = torch.load(tmp_path / "one" / "final.pt", weights_only=True)
    info = one["info"]
    assert two["step"] == one["step"] == STEPS and two["images_seen"] == one["images_seen"] == STEPS * 16
    assert two["augment"]["p"] == one["augment"]["p"]
    assert one["augment"]["p"] < 1 or model == "acgan"
    assert largest_difference(two["discriminator"], one["discriminator"]) < DISCRIMINATOR_TOLERANCE
    for part in ("generator", "generator_ema"):
        assert largest_difference(two[part], one[part], skip=NOT_COMPARED[model]) < GENERATOR_TOLERANCE[model], part
        assert float((images(two[part], info) - images(one[part], info)).abs().max()) < GREY_LEVEL, part
    # the tolerances are far below what training moved, so a step that differed would not hide in them
    initial_generator, initial_discriminator = initial_networks(info)
    assert largest_difference(one["discriminator"], initial_discriminator) > 10 * DISCRIMINATOR_TOLERANCE
    moved = (images(one["generator"], info) - images(initial_generator, info)).abs().max()
    assert float(moved) > 10 * GREY_LEVEL


def test_torchrun_ddpm_processes_draw_their_own_share_of_the_noise(tmp_path):
    """Each process noises its half of the global batch with its half of the global noise, timesteps and dropped
    labels, so two processes take one process's steps, to float rounding magnified by Adam where a gradient is at
    rounding level (it steps every weight by about lr). Measured after 4 steps: 0.9% of the weights differ by more
    than 1e-4 (lr 2e-3); when both processes drew the same noise for their different halves, 97% did."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "medsyn"]
    train = ["gan", "train", "--model", "ddpm", "--preset", "smoke", "--steps", "4", "--batch-size", "16",
             "--sampling-steps", "2", "--snapshot-every", "4", "--device", "cpu", "--no-progress"]
    subprocess.run([*launch, *train, "--out", str(tmp_path / "two")], env=env, check=True, timeout=300)
    assert main([*train, "--out", str(tmp_path / "one")]) == 0
    two = torch.load(tmp_path / "two" / "final.pt", weights_only=True)["generator"]
    one = torch.load(tmp_path / "one" / "final.pt", weights_only=True)["generator"]
    moved = [(two[k].double() - one[k].double()).abs().flatten() for k in one if one[k].is_floating_point()]
    differ = float((torch.cat(moved) > 1e-4).double().mean())
    assert differ < 0.05, f"{differ:.1%} of the weights differ by more than 1e-4"
