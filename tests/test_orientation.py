"""The orientation step's turn-back on synthetic photos whose answers are known exactly.

See tests/support/oriented_model.py for the tiny classifier whose answers are known exactly.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from support.oriented_model import classifier as _classifier
from support.oriented_model import orientation_head as _orientation_head
from support.oriented_model import photos as _photos

from training import orientation

pytestmark = pytest.mark.unit


def test_turn_back_undoes_each_images_own_quarter_turn_exactly():
    rng = np.random.default_rng(0)
    upright = rng.integers(0, 256, (6, 5, 5, 3)).astype(np.uint8)
    turns = np.array([0, 1, 2, 3, 1, 3])
    turned = np.stack([np.rot90(img, k) for img, k in zip(upright, turns, strict=True)])
    back = orientation.turn_back(tf.constant(turned), tf.constant(turns))
    assert back.dtype == tf.uint8
    np.testing.assert_array_equal(back.numpy(), upright)


def test_turn_back_matches_tf_image_rot90_convention():
    image = np.arange(9, dtype=np.int32).reshape(1, 3, 3, 1)
    turned = tf.image.rot90(image, k=1)
    np.testing.assert_array_equal(orientation.turn_back(turned, tf.constant([1])).numpy(), image)


def test_turned_photos_get_the_upright_answer_and_upright_ones_one_pass():
    net = _classifier()
    kernel, bias = _orientation_head()
    oriented = orientation.build_oriented(net, kernel, bias, threshold=0.9)
    photos = _photos()
    upright = net(photos).numpy()
    assert upright.argmax(1).tolist() == [0, 1]
    for k in range(4):
        turned = np.ascontiguousarray(np.rot90(photos, k, axes=(1, 2)))
        np.testing.assert_allclose(oriented(turned).numpy(), upright, atol=1e-6)
        step = oriented.get_layer("orientation_step")
        turns = step.turns(orientation.features_model(net)(turned)).numpy()
        assert turns.tolist() == [k, k]
    # Without the step, turned 90 degrees the "left" photo loses its marker (three-way tie) and
    # the "right" photo's marker lands top-left: a confident wrong "left".
    plain = net(np.rot90(photos, 1, axes=(1, 2)).copy()).numpy()
    np.testing.assert_allclose(plain[0], 1 / 3, atol=1e-6)
    assert plain[1].argmax() == 0 and plain[1].max() > 0.99


def test_below_the_threshold_nothing_is_turned_back():
    net = _classifier()
    kernel, bias = _orientation_head()
    oriented = orientation.build_oriented(net, kernel, bias, threshold=1.01)
    turned = np.ascontiguousarray(np.rot90(_photos(), 2, axes=(1, 2)))
    np.testing.assert_allclose(oriented(turned).numpy(), net(turned).numpy(), atol=1e-7)


def test_mixed_batch_in_a_tf_function_turns_back_only_the_turned_rows():
    net = _classifier()
    kernel, bias = _orientation_head()
    oriented = orientation.build_oriented(net, kernel, bias, threshold=0.9)
    photos = _photos()
    batch = np.stack([photos[0], np.rot90(photos[1], 3), np.rot90(photos[0], 2), photos[1]])
    run = tf.function(lambda x: oriented(x, training=False))
    got = run(tf.constant(batch)).numpy()
    assert got.argmax(1).tolist() == [0, 1, 0, 1]
    np.testing.assert_allclose(got.max(1), net(photos).numpy().max(1)[[0, 1, 0, 1]], atol=1e-6)


def test_saved_and_loaded_model_answers_the_same(tmp_path):
    net = _classifier()
    kernel, bias = _orientation_head()
    oriented = orientation.build_oriented(net, kernel, bias, threshold=0.9)
    path = tmp_path / "model.keras"
    oriented.save(path)
    loaded = keras.models.load_model(path, compile=False)
    assert loaded.get_layer("orientation_step").threshold == 0.9
    turned = np.ascontiguousarray(np.rot90(_photos(), 3, axes=(1, 2)))
    np.testing.assert_allclose(loaded(turned).numpy(), oriented(turned).numpy(), atol=1e-7)


def test_simulate_on_cached_features_equals_the_layer():
    net = _classifier()
    kernel, bias = _orientation_head()
    oriented = orientation.build_oriented(net, kernel, bias, threshold=0.9)
    photos = _photos().astype(np.uint8)
    step = oriented.get_layer("orientation_step")
    cached, cues = orientation.turned_features(step, photos)
    np.testing.assert_array_equal(cached, cues)
    head = net.get_layer("probabilities").get_weights()
    sim = orientation.simulate(cached, cues, kernel, bias, (head[0], head[1]), 0.9)
    for k in range(4):
        turned = np.rot90(photos, k, axes=(1, 2)).astype(np.float32)
        np.testing.assert_allclose(sim.class_probabilities[k], oriented(turned).numpy(), atol=1e-6)
    assert sim.turned_back.tolist() == [[False, False], [True, True], [True, True], [True, True]]
    threshold, table = orientation.choose_threshold(
        cached, cues, np.array([0, 1]), kernel, bias, (head[0], head[1]), np.array([0.5, 1.01])
    )
    assert threshold == 0.5
    assert table[0]["accuracy_by_turn"] == [1.0, 1.0, 1.0, 1.0]
    assert table[1]["accuracy_by_turn"][0] == 1.0 and table[1]["mean_accuracy"] < 1.0


def _identity_step(side: int, channels: int, **kwargs) -> orientation.OrientationStep:
    """A step whose features model returns its input: the pixels are the feature map."""
    inputs = keras.Input((side, side, channels))
    return orientation.OrientationStep(keras.Model(inputs, inputs), regions=True, **kwargs)


def test_regions_are_the_means_of_the_four_overlapping_quadrants():
    grid = np.arange(49, dtype=np.float32).reshape(1, 7, 7, 1)  # value = 7 * row + col
    pooled, cues = _identity_step(7, 1).describe(tf.constant(grid))
    np.testing.assert_allclose(pooled.numpy(), [[24.0]])
    # Quadrants rows/cols 0..3 and 3..6: means 7 * 1.5 + 1.5 = 12, 12 + 3, 12 + 21, 12 + 24.
    np.testing.assert_allclose(cues.numpy(), [[12.0, 15.0, 33.0, 36.0]])


def test_regions_tell_90_from_270_degrees():
    kernel = np.zeros((12, 4), np.float32)
    for turn, quadrant in enumerate((0, 2, 3, 1)):  # top-left moves to BL, BR, TR (CCW turns)
        kernel[quadrant * 3, turn] = 10.0  # red of that quadrant
    step = _identity_step(7, 3, threshold=0.9)
    step.build((None, 7, 7, 3))
    step.orientation.set_weights([kernel, np.zeros(4, np.float32)])
    photo = np.zeros((1, 7, 7, 3), np.float32)
    photo[0, 0, 0, 0] = 49.0  # quadrant mean 49 / 16
    turned = np.concatenate([np.rot90(photo, k, axes=(1, 2)) for k in range(4)])
    _, cues = step.describe(tf.constant(turned))
    assert step.turns(cues).numpy().tolist() == [0, 1, 2, 3]
