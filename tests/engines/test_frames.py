"""Image <-> tensor conversions used on every frame."""

from __future__ import annotations

import numpy as np
import pytest

from engines.frames import NonFiniteOutput, image_to_input, output_to_image


def test_image_to_input_is_exact_and_reuses_the_buffer() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = np.empty((1, 3, 5, 7), np.float32)
    result = image_to_input(image, out)
    assert result is out
    expected = (image.astype(np.float32) / 255).transpose(2, 0, 1)[None]
    assert np.array_equal(result, expected)  # exactly x / 255, as the goldens store it


def test_output_to_image_rounds_clips_and_reuses_buffers() -> None:
    prediction = np.array([0.0, 0.5 / 255, 1.5 / 255, 0.499, 1.0, 1.2, -0.1], np.float32)
    prediction = np.broadcast_to(prediction[None, None, None, :], (1, 3, 1, 7)).copy()
    out = np.empty((1, 7, 3), np.uint8)
    scratch = np.empty((1, 7, 3), np.float32)
    result = output_to_image(prediction, out, scratch)
    assert result is out
    assert result[0, :, 0].tolist() == [0, 0, 2, 127, 255, 255, 0]
    round_trip = output_to_image(image_to_input(result))
    assert np.array_equal(round_trip, result)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_output_that_is_not_finite_is_an_error_never_a_frame(bad: float) -> None:
    prediction = np.full((1, 3, 4, 4), 0.5, np.float32)
    prediction[0, 1, 2, 3] = bad
    out = np.full((4, 4, 3), 7, np.uint8)
    with pytest.raises(NonFiniteOutput, match="1 of 48 values that are not finite"):
        output_to_image(prediction, out)
    assert (out == 7).all()  # nothing was written


def test_huge_finite_values_are_still_a_frame() -> None:
    prediction = np.full((1, 3, 4, 4), 1e36, np.float32)  # the sum overflows, no value does
    assert (output_to_image(prediction) == 255).all()
