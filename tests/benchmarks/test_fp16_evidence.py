"""fp16 evidence for gpu_check rows: half-precision kernels told apart from fp32/TF32 ones by
their names (cuDNN, cuBLAS, CUTLASS naming)."""

from __future__ import annotations

from benchmarks.fp16_evidence import half_kernels, summary


def test_half_kernels_by_name() -> None:
    half = [
        "sm80_xmma_fprop_implicit_gemm_f16f16_f16f32_nhwckrsc_nhwc_tilesize64x64x64",
        "volta_h884gemm_64x64_ldg8_nn",
        "ampere_h16816gemm_128x128_ldg8_stages_32x5_nn",
        "cutlass__5x_cudnn::Kernel<cutlass_tensorop_f16_s16816fprop_optimized_f16_64x64>",
        "void cudnn::ops::nchwToNhwcKernel<__half, __half, float, false, true>",
    ]
    full = [
        "sm80_xmma_fprop_implicit_gemm_tf32f32_tf32f32_f32_nhwckrsc_nchw",
        "void at::native::vectorized_elementwise_kernel<4, float>",
        "ampere_sgemm_128x64_nn",
        "sm90_xmma_gemm_bf16bf16_bf16f32",
    ]
    assert half_kernels(half + full) == half
    assert summary(9, half_kernels(full), "k")["ran_fp16"] is False
    evidence = summary(9, half, "k")
    assert evidence["ran_fp16"] and evidence["half"] == 5 and len(evidence["examples"]) == 3
