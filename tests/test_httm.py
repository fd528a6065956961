"""HTTM: settings, the compiled kernel against the NumPy reference, and the method on a model."""
import numpy as np
import pytest

from haste_edge.httm import kernel, reference
from haste_edge.httm.config import HttmConfig, parse_httm_spec
from haste_edge.ops.attention import _reference as sdpa_reference


def frames_like(rng, heads, frames, per_frame, d, noise):
    """(heads, frames * per_frame, d) tokens: one base frame repeated with noise."""
    base = rng.standard_normal((heads, per_frame, d)).astype(np.float32)
    return np.concatenate([base + noise * rng.standard_normal(base.shape).astype(np.float32)
                           for _ in range(frames)], axis=1)


def dense(q, k, v, scale):
    return sdpa_reference([q[None], k[None], v[None]], {"scale": scale})[0][0]


def test_spec_round_trip_and_named_settings():
    c = parse_httm_spec("q=0.2,kv=0.3,ns=8,nt=4,outliers=0.05,mode=uniform,start=1")
    assert c == HttmConfig(q=0.2, kv=0.3, ns=8, nt=4, outliers=0.05, mode="uniform", start=1)
    assert parse_httm_spec(c.spec()) == c
    assert parse_httm_spec("dense") == HttmConfig()
    assert parse_httm_spec("fast").q < 1.0


@pytest.mark.parametrize("spec, words", [("q=0", "kept fraction"), ("kv=1.5", "kept fraction"), ("r=2", "unknown field 'r'"),
                                         ("q=abc", "not a float"), ("mode=x", "'head' or 'uniform'"),
                                         ("ns=0", "ns=0"), ("outliers=1", "outliers")])
def test_bad_spec_names_the_field(spec, words):
    with pytest.raises(ValueError, match=words):
        parse_httm_spec(spec)


@pytest.mark.parametrize("n, per_frame, ns, nt", [(49, 49, 16, 2), (196, 49, 7, 4), (196, 49, 16, 2), (50, 49, 8, 1)])
def test_blocks_cover_every_token_once(n, per_frame, ns, nt):
    blocks = reference.block_tokens(n, per_frame, ns, nt)
    assert sorted(np.concatenate(blocks).tolist()) == list(range(n))
    assert all(len(b) <= ns * nt for b in blocks)


@pytest.mark.parametrize("config", [HttmConfig(), HttmConfig(q=0.5, kv=0.5), HttmConfig(q=0.2, kv=0.3, ns=7, nt=4),
                                    HttmConfig(q=0.7, kv=0.4, ns=5, nt=1), HttmConfig(q=0.5, kv=0.3, outliers=0.1),
                                    HttmConfig(q=0.5, kv=0.5, mode="uniform"),
                                    HttmConfig(q=0.3, kv=0.6, outliers=0.2, mode="uniform", ns=3, nt=3)])
@pytest.mark.parametrize("heads, frames, per_frame, d", [(3, 4, 49, 32), (2, 1, 49, 16), (4, 3, 10, 8)])
def test_kernel_matches_reference(config, heads, frames, per_frame, d):
    rng = np.random.default_rng(heads * 100 + frames * 10 + d)
    q, k, v = (frames_like(rng, heads, frames, per_frame, d, 0.4) for _ in range(3))
    scale = d ** -0.5
    want, counts = reference.httm_attention(q, k, v, scale, config, per_frame)
    got, row = kernel.httm_attention(q, k, v, scale, config, per_frame)
    row = dict(zip(kernel.FIELDS, row))
    assert (row["queries_kept"], row["keys_kept"]) == (counts["queries_kept"], counts["keys_kept"])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, np.abs(want).max()))
    n = frames * per_frame
    assert row["dense_macs"] == 2 * heads * n * n * d
    assert row["executed_macs"] <= row["dense_macs"]
    if config.q == config.kv == 1.0:
        assert row["executed_macs"] == row["dense_macs"] and row["match_macs"] == row["merge_adds"] == 0
        np.testing.assert_allclose(got, dense(q, k, v, scale), atol=1e-5)
    else:
        assert row["executed_macs"] < row["dense_macs"] and row["match_macs"] > 0


def test_kept_fraction_sets_the_merged_counts():
    rng = np.random.default_rng(1)
    q, k, v = (frames_like(rng, 3, 4, 49, 16, 0.3) for _ in range(3))
    _, row = kernel.httm_attention(q, k, v, 0.25, HttmConfig(q=0.5, kv=0.25, ns=16, nt=2), 49)
    row = dict(zip(kernel.FIELDS, row))
    blocks = reference.block_tokens(196, 49, 16, 2)
    assert row["queries_kept"] == 3 * sum(reference.destinations(len(b), 0.5)[0] for b in blocks)
    assert row["keys_kept"] == 3 * sum(reference.destinations(len(b), 0.25)[0] for b in blocks)


def test_repeated_frames_merge_exactly():
    """Two identical frames, half the tokens kept, blocks spanning both frames: every token of the
    second frame merges into its copy, and with the keys' log-size weights attention is unchanged."""
    rng = np.random.default_rng(2)
    q, k, v = (np.concatenate([x, x], axis=1) for x in (rng.standard_normal((3, 49, 16)).astype(np.float32)
                                                        for _ in range(3)))
    got, row = kernel.httm_attention(q, k, v, 0.25, HttmConfig(q=0.5, kv=0.5, ns=7, nt=2), 49)
    assert dict(zip(kernel.FIELDS, row))["keys_kept"] == 3 * 49
    np.testing.assert_allclose(got, dense(q, k, v, 0.25), atol=2e-6)


def test_head_wise_and_uniform_differ_only_in_matching():
    rng = np.random.default_rng(3)
    q, k, v = (frames_like(rng, 3, 2, 49, 16, 0.5) for _ in range(3))
    head, _ = kernel.httm_attention(q, k, v, 0.25, HttmConfig(q=0.5, kv=0.5), 49)
    uni, _ = kernel.httm_attention(q, k, v, 0.25, HttmConfig(q=0.5, kv=0.5, mode="uniform"), 49)
    assert not np.allclose(head, uni)
    q1, k1, v1 = q[:1], k[:1], v[:1]           # one head: the two are the same method
    a, _ = kernel.httm_attention(q1, k1, v1, 0.25, HttmConfig(q=0.5, kv=0.5), 49)
    b, _ = kernel.httm_attention(q1, k1, v1, 0.25, HttmConfig(q=0.5, kv=0.5, mode="uniform"), 49)
    np.testing.assert_array_equal(a, b)


def test_outliers_stay_unmerged_in_every_head():
    rng = np.random.default_rng(4)
    q = frames_like(rng, 3, 2, 49, 16, 0.5)
    q[:, 60] *= 8                                # far from anything it could merge with
    plan = kernel.block_plan(98, 49, 16, 2, 0.5)
    groups, counts = np.empty((3, 98), np.int64), np.empty(3, np.int64)
    kernel._match_heads(q, *plan[:4], False, groups, counts)
    kernel.split_outliers(q, groups, counts, 5)
    for h in range(3):
        assert np.count_nonzero(groups[h] == groups[h, 60]) == 1
    want = reference.split_outliers(q, [reference.match_groups(q[h], reference.block_tokens(98, 49, 16, 2), 0.5)
                                        for h in range(3)], 5 / 98)
    for h in range(3):
        np.testing.assert_array_equal(groups[h], want[h])
