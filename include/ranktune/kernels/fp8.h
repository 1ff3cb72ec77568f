// defines: Fp8Rows (a matrix in FP8 e4m3 with one fp32 scale per row, x ~ q * scale), fp8_quantize_rows,
// fp8_quantize_columns (the rows of w's transpose, written transposed without a 16-bit copy of it) and fp8_rowwise_mm
// (the product of two such matrices, rows by rows: at::_scaled_mm on a GPU of compute capability 8.9 or more, fp32
// arithmetic on the CPU). What train.fp8_matmuls runs the frozen base matmuls of LoRA with (model/lora_linear.h):
// Y = X W^T takes X and W by rows, dX = dY W takes dY by rows and W by columns. CUDA kernels on a GPU; the ATen
// composition elsewhere, the reference the kernels are tested against bit for bit.
#pragma once

#include <ATen/core/Tensor.h>

namespace ranktune {

// e4m3's largest finite value: a row's absolute maximum is scaled to it.
inline constexpr float kE4m3Max = 448.0f;

struct Fp8Rows {
  at::Tensor q;      // float8_e4m3fn [rows, cols], contiguous
  at::Tensor scale;  // float32 [rows, 1]: amax / 448 (1 for a row of zeros)
};

// x: a 2-D bf16, fp16 or fp32 tensor with contiguous rows. q = e4m3(float(x) / scale), rounded to nearest even.
Fp8Rows fp8_quantize_rows(const at::Tensor& x);
Fp8Rows fp8_quantize_rows_reference(const at::Tensor& x);

// fp8_quantize_rows(w.t()) for a 2-D w [n, k] with contiguous rows: q [k, n], scale [k, 1], one per column of w.
Fp8Rows fp8_quantize_columns(const at::Tensor& w);
Fp8Rows fp8_quantize_columns_reference(const at::Tensor& w);

// y[m, n] = a.scale[m] * b.scale[n] * sum_k a.q[m, k] * b.q[n, k], in `out` (bf16, fp16 or fp32): a [m, k] and b [n, k]
// on one device. On the CPU each factor is dequantized to fp32 and multiplied in fp32 (the reference); on CUDA,
// at::_scaled_mm with row-wise scales (k and n multiples of 16, as its FP8 kernels want; fp32 out is a cast of bf16).
at::Tensor fp8_rowwise_mm(const Fp8Rows& a, const Fp8Rows& b, at::ScalarType out);
at::Tensor fp8_rowwise_mm_reference(const Fp8Rows& a, const Fp8Rows& b, at::ScalarType out);

// Whether `device` runs fp8_rowwise_mm: the CPU always (in fp32), a CUDA device of compute capability 8.9 or more.
bool fp8_matmuls_supported(const at::Device& device);

}  // namespace ranktune
