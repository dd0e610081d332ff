"""lingrad.gradcheck: passes correct gradients, catches wrong ones, reports clearly."""
import numpy as np
import pytest

import lingrad
from lingrad.gradcheck import GradcheckError, GradcheckReport, gradcheck


def linear_fwd(x, w, b):
    return lingrad.linear(x, w, b)


def linear_bwd(dy, x, w, b):
    return lingrad.linear_backward(x, w, dy)


@pytest.fixture
def xwb(rng):
    return rng.standard_normal((7, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3)


def test_passes_on_lingrad_linear_backward(xwb):
    report = gradcheck(linear_fwd, xwb, linear_bwd, names=["x", "w", "b"])
    assert isinstance(report, GradcheckReport)
    assert report and report.ok
    assert [c.name for c in report.checks] == ["x", "w", "b"]
    assert [c.checked for c in report.checks] == [35, 15, 3]
    assert max(c.rel_err for c in report.checks) < 1e-8
    assert "passed" in str(report)


def test_passes_with_relu_away_from_the_kink(rng):
    x, w, b = rng.standard_normal((6, 4)), rng.standard_normal((4, 5)), rng.standard_normal(5)
    y = x @ w + b
    b = b + np.where(np.abs(y) < 0.05, 0.2, 0.0).max(0)  # keep every pre-activation off 0 by more than h
    assert np.abs(x @ w + b).min() > 1e-3
    report = gradcheck(lambda x, w, b: lingrad.linear(x, w, b, relu=True), [x, w, b],
                       lambda dy, x, w, b: lingrad.linear_backward(
                           x, w, dy, relu_out=lingrad.linear(x, w, b, relu=True)))
    assert report, report


WRONG = {  # mistake -> the input whose gradient it breaks
    "db_one_row": "b",      # db = dy[0]: only row 0's gradient, not the sum over the batch
    "db_mean": "b",         # db = dy.mean(0): the forward adds b to each row once, not 1/N times
    "dx_wrong_rows": "x",   # dx = dy @ w[::-1].T: the right shape, summed against the wrong w[i, :]
    "dw_factor_two": "w",   # dw = 2 x.T @ dy
}


@pytest.mark.parametrize("wrong", sorted(WRONG))
def test_catches_a_wrong_gradient(xwb, wrong):
    """Classic mistakes of a hand-written backward, each caught on the input it breaks."""
    def bwd(dy, x, w, b):
        dx, dw, db = dy @ w.T, x.T @ dy, dy.sum(0)
        if wrong == "db_one_row":
            db = dy[0]
        if wrong == "db_mean":
            db = dy.mean(0)
        if wrong == "dx_wrong_rows":
            dx = dy @ w[::-1].T
        if wrong == "dw_factor_two":
            dw = 2 * dw
        return dx, dw, db

    report = gradcheck(linear_fwd, xwb, bwd, names=["x", "w", "b"])
    assert not report
    assert {c.name for c in report.checks if not c.ok} == {WRONG[wrong]}
    assert "FAIL" in str(report)


def test_wrong_shape_is_a_failure_not_a_crash(xwb):
    report = gradcheck(linear_fwd, xwb, lambda dy, x, w, b: (dy @ w.T, (x.T @ dy).T, dy.sum(0)),
                       names=["x", "w", "b"])
    assert not report
    (w_check,) = [c for c in report.checks if c.name == "w"]
    assert "shape (3, 5)" in w_check.problem and not w_check.ok


def test_raise_on_failure(xwb):
    with pytest.raises(GradcheckError, match="FAILED"):
        gradcheck(linear_fwd, xwb, lambda dy, x, w, b: (dy @ w.T, x.T @ dy, 0 * dy.sum(0)),
                  raise_on_failure=True)
    assert isinstance(GradcheckError("m"), AssertionError)


def test_none_skips_an_input_and_inputs_are_not_modified(xwb):
    originals = [a.copy() for a in xwb]
    report = gradcheck(linear_fwd, xwb, lambda dy, x, w, b: (None, x.T @ dy, dy.sum(0)))
    assert [c.name for c in report.checks] == ["input1", "input2"]
    assert report
    for a, o in zip(xwb, originals):
        np.testing.assert_array_equal(a, o)


def test_max_elements_samples_and_still_catches(rng):
    x, w, b = rng.standard_normal((40, 30)), rng.standard_normal((30, 20)), rng.standard_normal(20)
    good = gradcheck(linear_fwd, [x, w, b], linear_bwd, max_elements=25)
    assert good and [c.checked for c in good.checks] == [25, 25, 20]
    bad = gradcheck(linear_fwd, [x, w, b], lambda dy, x, w, b: (dy @ w.T, x.T @ dy * 1.01, dy.sum(0)),
                    max_elements=25)
    assert not bad


def test_float32_inputs_are_checked_in_float64(rng):
    x, w, b = (a.astype(np.float32) for a in (rng.standard_normal((4, 3)), rng.standard_normal((3, 2)),
                                              rng.standard_normal(2)))
    report = gradcheck(linear_fwd, [x, w, b], linear_bwd)
    assert report and max(c.rel_err for c in report.checks) < 1e-8


def test_scalar_output(rng):
    a = rng.standard_normal(5)
    report = gradcheck(lambda a: np.sum(a ** 3), [a], lambda dy, a: (dy * 3 * a ** 2,))
    assert report
    assert not gradcheck(lambda a: np.sum(a ** 3), [a], lambda dy, a: (dy * 2 * a ** 2,))


def test_bad_arguments(xwb):
    with pytest.raises(ValueError, match="2 gradients for 3 inputs"):
        gradcheck(linear_fwd, xwb, lambda dy, x, w, b: (None, None))
    with pytest.raises(ValueError, match="2 names for 3 inputs"):
        gradcheck(linear_fwd, xwb, linear_bwd, names=["x", "w"])
