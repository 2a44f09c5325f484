"""Unit tests of training/calibration.py on synthetic scores with closed-form answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training import calibration as cal


def test_temperature_two_takes_the_square_root_of_the_odds():
    q = cal.temperature_scale(np.array([[0.8, 0.2], [0.5, 0.5]]), 2.0)
    np.testing.assert_allclose(q, [[2 / 3, 1 / 3], [0.5, 0.5]], rtol=1e-9)


def test_temperature_one_returns_the_probabilities_and_small_sharpens():
    p = np.array([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(cal.temperature_scale(p, 1.0), p, atol=1e-11)
    sharp = cal.temperature_scale(p[:1], 0.5)
    np.testing.assert_allclose(sharp, [[49 / 54, 4 / 54, 1 / 54]], rtol=1e-9)


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.inf, math.nan])
def test_temperature_must_be_positive_and_finite(temperature):
    with pytest.raises(ValueError, match="temperature"):
        cal.temperature_scale(np.array([[0.5, 0.5]]), temperature)


def test_bad_probabilities_are_refused():
    with pytest.raises(ValueError, match="shape"):
        cal.temperature_scale(np.array([0.5, 0.5]), 1.0)
    with pytest.raises(ValueError, match="non-negative"):
        cal.temperature_scale(np.array([[1.5, -0.5]]), 1.0)


def test_fitted_temperature_matches_the_closed_form():
    # Every row scores [0.9, 0.1] (log-odds log 9) and 3 of 4 are class 0. The NLL is least when
    # sigmoid(log 9 / T) = 3/4, i.e. T = log 9 / log 3 = 2 exactly.
    p = np.tile([[0.9, 0.1]], (400, 1))
    labels = np.array([0, 0, 0, 1] * 100)
    assert cal.fit_temperature(p, labels) == pytest.approx(2.0, abs=1e-5)
    assert cal.negative_log_likelihood(p, labels, 2.0) == pytest.approx(
        -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), abs=1e-9
    )


def test_fitted_temperature_is_one_when_already_calibrated_and_below_one_when_shy():
    p = np.tile([[0.9, 0.1]], (100, 1))
    calibrated = np.array([0] * 90 + [1] * 10)
    assert cal.fit_temperature(p, calibrated) == pytest.approx(1.0, abs=1e-5)
    # 0.9 scores that are right 99 % of the time: sigmoid(log 9 / T) = 0.99 -> T = log 9 / log 99
    shy = np.array([0] * 99 + [1])
    assert cal.fit_temperature(p, shy) == pytest.approx(math.log(9) / math.log(99), abs=1e-5)


def test_fitted_temperature_recovers_the_generating_temperature():
    rng = np.random.default_rng(7)
    logits = rng.normal(0, 3, size=(20000, 4))
    true_t = 2.5
    truth = np.exp(logits / true_t)
    truth /= truth.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(4, p=row) for row in truth])
    overconfident = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert cal.fit_temperature(overconfident, labels) == pytest.approx(true_t, rel=0.05)


def test_fit_temperature_refuses_bad_labels():
    with pytest.raises(ValueError, match="labels"):
        cal.fit_temperature(np.array([[0.5, 0.5]]), np.array([2]))
    with pytest.raises(ValueError, match="labels"):
        cal.fit_temperature(np.array([[0.5, 0.5]]), np.array([0.0]))


def test_split_known_drops_the_off_category_column_and_renormalises():
    probabilities, known = cal.split_known(np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]), 2)
    np.testing.assert_allclose(known, [0.5, 0.9])
    np.testing.assert_allclose(probabilities, [[0.4, 0.6], [2 / 3, 1 / 3]])
    middle, known = cal.split_known(np.array([[0.2, 0.5, 0.3]]), 1)
    np.testing.assert_allclose(middle, [[0.4, 0.6]])
    same, ones = cal.split_known(np.array([[0.2, 0.8]]), None)
    np.testing.assert_array_equal(same, [[0.2, 0.8]])
    np.testing.assert_array_equal(ones, [1.0])
    with pytest.raises(ValueError, match="other_class_index"):
        cal.split_known(np.array([[0.2, 0.8]]), 2)


def test_reasons_check_the_known_probability_first():
    probabilities = np.array([[0.9, 0.1], [0.5, 0.5], [0.5, 0.5], [0.7, 0.3]])
    known = np.array([0.9, 0.9, 0.2, 0.6])
    why = cal.reasons(probabilities, known, min_known_probability=0.6, min_confidence=0.7)
    assert why.tolist() == ["", "low_confidence", "not_a_known_category", ""]
    never = cal.reasons(probabilities, known, min_known_probability=None, min_confidence=0.7)
    assert never.tolist() == ["", "low_confidence", "low_confidence", ""]


def test_apply_rule_end_to_end():
    raw = np.array([[0.8, 0.2, 0.0], [0.1, 0.1, 0.8], [0.45, 0.45, 0.1]])
    out = cal.apply_rule(
        raw, temperature=2.0, other_class_index=2, min_known_probability=0.5, min_confidence=0.6
    )
    # row 0: sqrt-odds 2:1, the zero column is ~1e-6 after the square root
    np.testing.assert_allclose(out.probabilities[0], [2 / 3, 1 / 3], rtol=1e-5)
    s = math.sqrt(0.1)
    assert out.known_probability[1] == pytest.approx(2 * s / (2 * s + math.sqrt(0.8)))
    assert out.abstain_reason.tolist() == ["", "not_a_known_category", "low_confidence"]
    assert out.abstain.tolist() == [False, True, True]
    np.testing.assert_allclose(out.probabilities.sum(axis=1), 1.0)


def test_precision_coverage_curve_groups_equal_scores():
    thresholds, precision, coverage = cal.precision_coverage_curve(
        np.array([0.9, 0.8, 0.8, 0.6]), np.array([True, True, False, True])
    )
    np.testing.assert_array_equal(thresholds, [0.9, 0.8, 0.6])
    np.testing.assert_allclose(precision, [1.0, 2 / 3, 3 / 4])
    np.testing.assert_allclose(coverage, [0.25, 0.75, 1.0])


CONF = np.array([0.95, 0.9, 0.8, 0.7, 0.6])
RIGHT = np.array([True, True, True, False, True])


@pytest.mark.parametrize(
    ("target", "threshold", "precision", "coverage"),
    [(0.75, 0.6, 0.8, 1.0), (0.8, 0.6, 0.8, 1.0), (0.9, 0.8, 1.0, 0.6), (1.0, 0.8, 1.0, 0.6)],
)
def test_min_confidence_is_the_lowest_threshold_reaching_the_target(
    target, threshold, precision, coverage
):
    point = cal.fit_min_confidence(CONF, RIGHT, target)
    assert (point.min_confidence, point.precision, point.coverage) == pytest.approx(
        (threshold, precision, coverage)
    )
    assert point.reached and point.min_known_probability is None
    assert point.filed == round(coverage * 5)


def test_min_confidence_files_nothing_when_the_target_is_out_of_reach():
    point = cal.fit_min_confidence(np.array([0.9, 0.8]), np.array([False, True]), 0.97)
    assert not point.reached and point.coverage == 0.0 and point.filed == 0
    assert point.min_confidence > 0.9 and point.min_confidence == pytest.approx(0.9)


def test_min_confidence_counts_filed_off_category_rows_as_wrong():
    inside = np.array([True, True, False, True])
    point = cal.fit_min_confidence(
        np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, True, False, True]), 0.9, inside
    )
    assert point.min_confidence == 0.8 and point.coverage == pytest.approx(2 / 3)


def test_fit_thresholds_uses_the_known_probability_to_drop_off_category_rows():
    # Two off-category rows have a confident top label but a low known probability; below
    # known 0.5 they can be dropped without losing an in-category row, which the top-1
    # threshold alone cannot do.
    probabilities = np.array(
        [[0.95, 0.05], [0.05, 0.95], [0.9, 0.1], [0.6, 0.4], [0.97, 0.03], [0.96, 0.04]]
    )
    known = np.array([0.9, 0.95, 0.8, 0.9, 0.3, 0.4])
    labels = np.array([0, 1, 0, 1, -1, -1])
    point = cal.fit_thresholds(probabilities, known, labels, 1.0)
    assert point.reached
    # the lowest candidate that drops both: just above the higher off-category score
    assert 0.4 < point.min_known_probability == pytest.approx(0.4)
    # row 3 (0.6 on the wrong label) must still be abstained for precision 1.0
    assert point.min_confidence == pytest.approx(0.9)
    assert point.coverage == pytest.approx(3 / 4) and point.precision == 1.0
    out = cal.reasons(probabilities, known, point.min_known_probability, point.min_confidence)
    assert out.tolist() == ["", "", "", "low_confidence"] + ["not_a_known_category"] * 2


def test_fit_thresholds_without_off_category_rows_is_the_top1_search():
    probabilities = np.stack([CONF, 1 - CONF], axis=1)
    labels = np.where(RIGHT, 0, 1)
    point = cal.fit_thresholds(probabilities, np.ones(5), labels, 0.9)
    assert point.min_known_probability is None
    assert (point.min_confidence, point.coverage) == pytest.approx((0.8, 0.6))


def test_reliability_bins_and_ece():
    table = cal.reliability(
        np.array([0.2, 0.4, 0.6, 0.8, 1.0]), np.array([0, 1, 1, 1, 1], bool), bins=2
    )
    np.testing.assert_array_equal(table.count, [2, 3])
    np.testing.assert_allclose(table.confidence, [0.3, 0.8])
    np.testing.assert_allclose(table.accuracy, [0.5, 1.0])
    assert table.ece == pytest.approx(2 / 5 * 0.2 + 3 / 5 * 0.2)


def test_reliability_is_zero_for_calibrated_scores_and_nan_in_empty_bins():
    conf = np.array([0.75] * 4)
    table = cal.reliability(conf, np.array([1, 1, 1, 0], bool), bins=4)
    assert table.ece == pytest.approx(0.0)
    assert np.isnan(table.accuracy[0]) and table.count.tolist() == [0, 0, 0, 4]
    with pytest.raises(ValueError):
        cal.reliability(np.array([1.2]), np.array([True]))


def test_fit_thresholds_caps_the_share_of_off_category_rows_filed():
    # 20 in-category rows, all right at confidence 0.9; 5 of them have known 0.65, the rest 0.9.
    # Two off-category rows are more confident (0.95) with known 0.6 and 0.7. For precision alone
    # (target 0.9) the best setting drops the 0.6 row and keeps every in-category row; the 0.7
    # row is filed (20/21 = 0.952).
    probabilities = np.array([[0.9, 0.1]] * 20 + [[0.95, 0.05]] * 2)
    known = np.array([0.9] * 15 + [0.65] * 5 + [0.6, 0.7])
    labels = np.array([0] * 20 + [-1, -1])
    free = cal.fit_thresholds(probabilities, known, labels, 0.9)
    assert 0.6 < free.min_known_probability <= 0.65
    assert free.coverage == 1.0 and free.precision == pytest.approx(20 / 21)
    # The same with at most half of the off-category rows filed: unchanged (1 of 2).
    half = cal.fit_thresholds(probabilities, known, labels, 0.9, max_off_category_filed=0.5)
    assert half == free
    # None of them: the threshold must pass 0.7, which drops the five rows at 0.65 too.
    none = cal.fit_thresholds(probabilities, known, labels, 0.9, max_off_category_filed=0.0)
    assert none.reached and none.min_known_probability == pytest.approx(0.7)
    assert none.min_known_probability > 0.7
    assert none.coverage == pytest.approx(0.75) and none.precision == 1.0
    out = cal.reasons(probabilities, known, none.min_known_probability, none.min_confidence)
    assert (out[:15] == "").all() and (out[15:] == "not_a_known_category").all()
