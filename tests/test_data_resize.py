"""``--resize``: images resized once, on their device, with statistics of the resized images."""

from __future__ import annotations

import pytest
import torch

from residuals.data import load_dataset
from residuals.data.augment import resize_images


def test_resize_images_keeps_uint8_and_constant_images():
    x = torch.full((3, 1, 8, 8), 200, dtype=torch.uint8)
    y = resize_images(x, 96)
    assert y.dtype == torch.uint8 and y.shape == (3, 1, 96, 96) and bool((y == 200).all())
    assert resize_images(x, 8) is x
    small = resize_images(torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8), 16)
    assert small.shape == (5, 3, 16, 16)
    with pytest.raises(ValueError, match="positive number of pixels"):
        resize_images(x, 0)


def test_load_dataset_resizes_and_measures_the_resized_images():
    plain, big = load_dataset("digits"), load_dataset("digits", resize=32)
    assert big.train_x.shape == (1347, 1, 32, 32) and big.test_x.shape == (
        450,
        1,
        32,
        32,
    )
    assert big.image_size == 32 and big.extra["resize"] == 32 and big.extra["original_size"] == 8
    assert torch.equal(big.train_y, plain.train_y)
    # bilinear upsampling keeps the mean and smooths: the std shrinks
    assert big.mean[0] == pytest.approx(plain.mean[0], abs=2e-3)
    assert big.std[0] < plain.std[0]
    x = big.train_x.double() / 255
    assert big.mean[0] == pytest.approx(float(x.mean()), rel=1e-9)
    assert big.std[0] == pytest.approx(float(x.std(unbiased=False)), rel=1e-9)
