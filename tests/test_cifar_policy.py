"""The rate-BP public code's CIFAR-10 AutoAugment table (``augment: public_code``), checked
against values derived by hand from its policy table: grey fill 128, bicubic shear,
counter-clockwise-only rotation, solarize threshold from 256, translation as a fraction."""
import numpy as np
import pytest
import torch
from PIL import Image

from sj_distill.data import cifar, cifar_policy as cp


def constant(value, size=8):
    return Image.fromarray(np.full((size, size, 3), value, np.uint8))


def pixels(img):
    return np.asarray(img).astype(int)


def test_magnitudes_are_the_tables_evenly_spaced_values():
    assert cp.magnitude("shearX", 8) == pytest.approx(0.3 * 8 / 9, abs=1e-15)
    assert cp.magnitude("translateY", 9) == 150 / 331
    assert cp.magnitude("rotate", 2) == pytest.approx(30 * 2 / 9, abs=1e-13)
    assert cp.magnitude("solarize", 0) == 256.0
    assert cp.magnitude("solarize", 2) == pytest.approx(256 - 256 * 2 / 9, abs=1e-12)
    assert [cp.magnitude("posterize", i) for i in range(10)] == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
    assert cp.magnitude("brightness", 0) == 0.0 and cp.magnitude("invert", 5) == 0.0


def test_the_table_has_the_25_cifar10_sub_policies():
    assert len(cp.SUB_POLICIES) == 25
    assert cp.SUB_POLICIES[1] == (("rotate", 0.7, 2), ("translateX", 0.3, 9))
    assert cp.SUB_POLICIES[14] == (("solarize", 0.5, 2), ("invert", 0.0, 3))
    assert cp.SUB_POLICIES[24] == (("translateY", 0.7, 9), ("autocontrast", 0.9, 1))
    for pair in cp.SUB_POLICIES:
        for operation, probability, index in pair:
            assert operation in cp.OPERATIONS and 0 <= probability <= 1 and 0 <= index <= 9


def test_solarize_threshold_starts_at_256_so_index_0_inverts_nothing():
    img = Image.fromarray(np.array([[[255, 228, 227]]], np.uint8))
    assert pixels(cp.apply(img, "solarize", 0)).tolist() == [[[255, 228, 227]]]
    # index 1: threshold 256 * 8/9 = 227.56, so 228 and 255 are inverted, 227 is kept
    assert pixels(cp.apply(img, "solarize", 1)).tolist() == [[[0, 27, 227]]]


@pytest.mark.parametrize("fraction, grey_columns", [(0.25, [6, 7]), (-0.25, [0, 1])])
def test_translation_is_a_fraction_of_the_size_and_fills_grey(fraction, grey_columns):
    img = Image.fromarray(np.tile(np.arange(8, dtype=np.uint8) * 10, (8, 1))[..., None]
                          .repeat(3, 2))
    out = pixels(cp.translate_x(img, fraction))  # output column x = input column x + 8 * fraction
    for x in range(8):
        expected = 128 if x in grey_columns else 10 * (x + int(8 * fraction))
        assert (out[:, x] == expected).all(), x


def test_signed_operations_draw_both_signs_and_rotation_does_not():
    img = Image.fromarray(np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3))
    shifted, rotated = set(), set()
    for seed in range(12):
        torch.manual_seed(seed)
        shifted.add(cp.apply(img, "translateX", 9).tobytes())
        rotated.add(cp.apply(img, "rotate", 9).tobytes())
    assert len(shifted) == 2 and len(rotated) == 1


def test_rotation_is_counter_clockwise_with_grey_corners():
    rgb = np.zeros((9, 9, 3), np.uint8)
    rgb[4, 8] = 255  # a marker at the middle of the right edge
    out = pixels(cp.rotate(Image.fromarray(rgb), 30.0))
    assert out[0, 0].tolist() == [128, 128, 128]  # a corner nothing maps to
    ys, xs = np.nonzero(out[..., 0] == 255)
    assert len(ys) >= 1 and (ys < 4).all()  # moved up (clockwise would move it down)
    quarter = pixels(cp.rotate(Image.fromarray(rgb), 90.0))
    assert quarter[0, 4].tolist() == [255, 255, 255]  # right-middle -> top-middle


def test_shear_is_bicubic_and_fills_grey():
    step = np.zeros((32, 32, 3), np.uint8)
    step[:, 16:] = 200
    out = pixels(cp.shear_x(Image.fromarray(step), 0.3))
    assert out[31, 31].tolist() == [128, 128, 128]  # samples x + 0.3 y beyond the image
    values = set(np.unique(out[..., 0]).tolist())
    assert values - {0, 128, 200}, "nearest-neighbour would give only 0, 128 and 200"


def test_enhancements_use_factor_one_plus_or_minus_magnitude():
    img = Image.fromarray(np.array([[[100, 100, 100]]], np.uint8))
    torch.manual_seed(0)
    outs = {pixels(cp.apply(img, "brightness", 9))[0, 0, 0] for _ in range(20)}
    assert outs == {190, 10}  # 100 * (1 +- 0.9)


def test_policy_is_reproducible_from_torch_seed():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8))
    policy = cp.PublicCIFAR10Policy()
    torch.manual_seed(3)
    first = [policy(img).tobytes() for _ in range(10)]
    torch.manual_seed(3)
    assert [policy(img).tobytes() for _ in range(10)] == first
    assert len(set(first)) > 1


def test_train_transform_picks_the_policy_by_name():
    from torchvision import transforms

    steps = {name: [type(t) for t in cifar.train_transform("cifar10", name).transforms]
             for name in cifar.AUGMENT_POLICIES}
    assert cp.PublicCIFAR10Policy in steps["public_code"]
    assert transforms.AutoAugment in steps["torchvision"]
    assert cp.PublicCIFAR10Policy not in steps["none"]
    assert transforms.AutoAugment not in steps["none"]
    with pytest.raises(ValueError, match=r"augment must be one of public_code, torchvision, "
                                         r"none .* got 'true'"):
        cifar.train_transform("cifar10", "true")
