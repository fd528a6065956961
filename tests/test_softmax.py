"""softmax.py's vectorised exp, row maximum and row softmax against float64 NumPy."""
import numpy as np
import pytest

from haste_edge.softmax import exp_shifted, exp_shifted_reference, softmax_rows, softmax_rows_reference


def test_exp_relative_error_under_5e_7_down_to_the_smallest_normal():
    x = np.concatenate([np.linspace(-87.0, 0.0, 20001, dtype=np.float32), np.float32([0.0, -1e-8, -0.5])])
    s, bits = x.copy(), np.empty(len(x), np.int32)
    total = exp_shifted(s, len(x), np.float32(0.0), bits, bits.view(np.float32))
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(s - want) / want) < 5e-7
    assert total == pytest.approx(want.sum(), rel=1e-5)
    ref = x.copy()
    assert exp_shifted_reference(ref, len(x), np.float32(0.0)) == pytest.approx(total, rel=1e-5)


def test_exp_below_the_floor_weighs_nothing_beside_the_maximum():
    s = np.float32([0.0, -100.0, -1e30])
    bits = np.empty(3, np.int32)
    exp_shifted(s, 3, np.float32(0.0), bits, bits.view(np.float32))
    assert s[0] == 1.0 and 0.0 <= s[1] < 1e-37 and 0.0 <= s[2] < 1e-37


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 3, 17), (3, 196, 196), (1, 5, 1000)])
def test_softmax_rows_matches_float64(shape):
    rng = np.random.default_rng(sum(shape))
    s = (rng.standard_normal(shape) * 8).astype(np.float32)
    s[..., 0] = -np.abs(s[..., 0])          # negative maxima too (their bit patterns order reversed)
    bias = np.log(rng.integers(1, 5, (shape[0], shape[2]))).astype(np.float32)
    want = softmax_rows_reference(s, bias, 0.25)
    got = s.copy()
    softmax_rows(got, bias, np.float32(0.25))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, rtol=1e-5)


def test_softmax_all_negative_rows_take_their_true_maximum():
    s = np.float32([[[-3.0, -1.0, -2.0, -50.0]]])
    got = s.copy()
    softmax_rows(got, np.zeros((1, 4), np.float32), np.float32(1.0))
    np.testing.assert_allclose(got, softmax_rows_reference(s, np.zeros((1, 4)), 1.0), rtol=1e-6)
