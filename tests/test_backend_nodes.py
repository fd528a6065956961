"""The onnx package's own backend conformance cases for every op the engine supports.

Each case whose ops are all supported either matches the expected outputs, or is listed in
UNSUPPORTED with the reason, and then must fail at load time with a clear UnsupportedOpError.
Non-float inputs are out of scope: the engine computes in float32 only.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from haste_edge import Model, UnsupportedOpError
from haste_edge.ops import registry

# Cases the engine rejects on purpose, with the reason the error must carry (a substring).
UNSUPPORTED = {
    "test_averagepool_1d_default": "2-D",
    "test_averagepool_3d_default": "2-D",
    "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_False": "2-D",
    "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_True": "2-D",
    "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_False": "2-D",
    "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_True": "2-D",
    "test_averagepool_3d_dilations_small": "2-D",
    "test_maxpool_1d_default": "2-D",
    "test_maxpool_3d_default": "2-D",
    "test_maxpool_3d_dilations": "2-D",
    "test_maxpool_3d_dilations_use_ref_impl": "2-D",
    "test_maxpool_3d_dilations_use_ref_impl_large": "2-D",
    "test_maxpool_with_argmax_2d_precomputed_pads": "Indices",
    "test_maxpool_with_argmax_2d_precomputed_strides": "Indices",
    "test_batchnorm_epsilon_training_mode": "training mode",
    "test_batchnorm_example_training_mode": "training mode",
    "test_edge_pad": "element type INT32",
    "test_reflect_pad": "element type INT32",
    "test_wrap_pad": "element type INT32",
    "test_training_dropout": "element type BOOL",
    "test_training_dropout_default": "element type BOOL",
    "test_training_dropout_default_mask": "element type BOOL",
    "test_training_dropout_mask": "element type BOOL",
    "test_training_dropout_zero_ratio": "element type BOOL",
    "test_training_dropout_zero_ratio_mask": "element type BOOL",
    "test_dropout_default_mask": "mask",
    "test_dropout_default_mask_ratio": "mask",
    "test_identity_opt": "optional",
    "test_constant": "no run-time inputs",
    "test_identity_sequence": "sequence",
}


# Cases whose expected values are written with 4 decimals in the onnx package.
TOLERANCE = {"test_averagepool_2d_ceil_last_window_starts_on_pad": 1e-3}


def _cases():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases
        cases = collect_testcases(None)
    ours = set(registry.OPS) | {"Dropout", "Constant"}
    out = []
    for c in cases:
        ops = {n.op_type for n in c.model.graph.node}
        if ops and ops <= ours:
            out.append(c)
    return sorted(out, key=lambda c: c.name)


CASES = _cases()


def _float_inputs(case) -> bool:
    for inputs, _ in case.data_sets:
        for x in inputs:
            if not (isinstance(x, np.ndarray) and x.dtype == np.float32):
                return False
    return True


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_backend_node_case(case, tmp_path):
    from onnx import save

    path = tmp_path / "model.onnx"
    save(case.model, str(path))
    if case.name in UNSUPPORTED:
        with pytest.raises(UnsupportedOpError, match=UNSUPPORTED[case.name]):
            from converters.onnx_import import import_onnx
            import_onnx(path)
        return
    if not _float_inputs(case):
        pytest.skip("non-float32 inputs: the engine computes in float32 only")
    from converters.onnx_import import import_onnx
    model = Model(import_onnx(path))
    for inputs, expected in case.data_sets:
        feeds = dict(zip(model.input_names, inputs))
        got = model.run(feeds)
        for name, want in zip(model.output_names, expected):
            tol = TOLERANCE.get(case.name, 1e-4)
            np.testing.assert_allclose(got[name], want.astype(np.float32), rtol=tol, atol=tol / 10,
                                       err_msg=f"{case.name}: output {name}")
