"""Energy ESTIMATES for PROM and its float baselines from counted operations (not measurements).

Per-operation energies, 45 nm (Horowitz, ISSCC 2014; docs/METHOD.md section 4): int8 add 0.03 pJ, int8
multiply 0.2, int32 add 0.1, int32 multiply 3.1, fp16 add 0.4, fp16 multiply 1.1, fp32 add 0.9,
fp32 multiply 3.7; a 32-bit DRAM word about 640 pJ. PROM's accumulations are priced as int32 adds
(its kernels add int8 codes into int32 sums); `int8_accumulate=True` prices them as int8 adds
instead, the cheaper view a reader may meet elsewhere. The float baselines do one multiply and one
add per dense MAC. Weight reads from DRAM (once per image) are a separate column: on a CPU with
caches most of them come from cache, so they bound the cost from above.
"""
from __future__ import annotations

PJ = {"int8_add": 0.03, "int8_mult": 0.2, "int32_add": 0.1, "int32_mult": 3.1, "fp16_add": 0.4,
      "fp16_mult": 1.1, "fp32_add": 0.9, "fp32_mult": 3.7, "dram_word": 640.0}

LABEL = ("ESTIMATE from counted operations x 45 nm per-operation energies (Horowitz, ISSCC 2014); "
         "arithmetic only unless stated, not a measurement")


def prom_picojoules(stats, int8_accumulate: bool = False) -> dict:
    """Per image (mean over the batch): {int8 mults, accumulations, fp32 epilogue/quantisation,
    dense float layers left, total arithmetic, weight DRAM} in pJ, from a PROM model's RunStats."""
    out = {"int8_mults": 0.0, "accumulations": 0.0, "fp32_ops": 0.0, "float_layers": 0.0, "weights_dram": 0.0}
    add = PJ["int8_add"] if int8_accumulate else PJ["int32_add"]
    for layer in stats.layers:
        c = layer.counters
        if layer.method == "prom":
            out["int8_mults"] += c["int8_mults"].mean() * PJ["int8_mult"]
            out["accumulations"] += c["int32_adds"].mean() * add
            out["fp32_ops"] += c["fp32_mults"].mean() * PJ["fp32_mult"] + c["fp32_adds"].mean() * PJ["fp32_add"]
            out["weights_dram"] += c["weight_bytes"].mean() / 4 * PJ["dram_word"]
        else:                                     # a layer left in float32 (none in the bundled model)
            out["float_layers"] += layer.dense.mean() * (PJ["fp32_mult"] + PJ["fp32_add"])
    out["arithmetic"] = out["int8_mults"] + out["accumulations"] + out["fp32_ops"] + out["float_layers"]
    return out


def float_picojoules(dense_macs: float, weight_bytes: float, bits: int) -> dict:
    """A float model (fp32 or fp16) doing every dense MAC as one multiply and one add."""
    kind = "fp32" if bits == 32 else "fp16"
    arith = dense_macs * (PJ[f"{kind}_mult"] + PJ[f"{kind}_add"])
    return {"arithmetic": arith, "weights_dram": weight_bytes / 4 * PJ["dram_word"]}
