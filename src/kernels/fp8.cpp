// The device dispatch of fp8.h: CUDA tensors use the kernels of fp8.cu and at::_scaled_mm, others the ATen
// composition (fp32 arithmetic), which is also the reference.
#include "ranktune/kernels/fp8.h"

#include <ATen/ATen.h>

#include <string>

#include "ranktune/core/error.h"
#ifdef RANKTUNE_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>

#include "fp8_cuda.h"
#endif

namespace ranktune {
namespace {

void check_matrix(const char* op, const at::Tensor& x) {
  const at::ScalarType t = x.scalar_type();
  if (x.dim() != 2 || (t != at::kBFloat16 && t != at::kHalf && t != at::kFloat))
    throw LibraryError(std::string(op) + ": wants a 2-D bf16, fp16 or fp32 tensor, got " + c10::str(x.sizes()) + " " +
                       c10::toString(t));
}

void check_operand(const char* name, const Fp8Rows& a) {
  if (a.q.dim() != 2 || a.q.scalar_type() != at::kFloat8_e4m3fn || a.scale.scalar_type() != at::kFloat ||
      a.scale.numel() != a.q.size(0))
    throw LibraryError(std::string("fp8_rowwise_mm: operand ") + name + " is not e4m3 rows with one fp32 scale each");
}

}  // namespace

Fp8Rows fp8_quantize_rows_reference(const at::Tensor& x) {
  check_matrix("fp8_quantize_rows", x);
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor amax = xf.abs().amax({1}, /*keepdim=*/true);
  const at::Tensor scale = at::where(amax > 0, amax / kE4m3Max, at::ones_like(amax));
  return {(xf / scale).to(at::kFloat8_e4m3fn).contiguous(), scale};
}

Fp8Rows fp8_quantize_columns_reference(const at::Tensor& w) {
  check_matrix("fp8_quantize_columns", w);
  return fp8_quantize_rows_reference(w.t().contiguous());
}

Fp8Rows fp8_quantize_rows(const at::Tensor& x) {
  check_matrix("fp8_quantize_rows", x);
#ifdef RANKTUNE_HAVE_CUDA
  if (x.is_cuda()) return fp8_quantize_rows_cuda(x.stride(1) == 1 ? x : x.contiguous());
#endif
  return fp8_quantize_rows_reference(x);
}

Fp8Rows fp8_quantize_columns(const at::Tensor& w) {
  check_matrix("fp8_quantize_columns", w);
#ifdef RANKTUNE_HAVE_CUDA
  if (w.is_cuda()) return fp8_quantize_columns_cuda(w.contiguous());
#endif
  return fp8_quantize_columns_reference(w);
}

at::Tensor fp8_rowwise_mm_reference(const Fp8Rows& a, const Fp8Rows& b, at::ScalarType out) {
  check_operand("a", a);
  check_operand("b", b);
  const at::Tensor da = a.q.to(at::kFloat) * a.scale.view({-1, 1});
  const at::Tensor db = b.q.to(at::kFloat) * b.scale.view({-1, 1});
  return at::mm(da, db.t()).to(out);
}

at::Tensor fp8_rowwise_mm(const Fp8Rows& a, const Fp8Rows& b, at::ScalarType out) {
  check_operand("a", a);
  check_operand("b", b);
  if (a.q.size(1) != b.q.size(1) || a.q.device() != b.q.device())
    throw LibraryError("fp8_rowwise_mm: operands " + c10::str(a.q.sizes()) + " on " + a.q.device().str() + " and " +
                       c10::str(b.q.sizes()) + " on " + b.q.device().str() +
                       " do not share their inner size and device");
  if (!a.q.is_cuda()) return fp8_rowwise_mm_reference(a, b, out);
  if (a.q.size(1) % 16 != 0 || b.q.size(0) % 16 != 0)
    throw LibraryError(
        "fp8_rowwise_mm: FP8 matmuls on a GPU want the inner and output sizes to be multiples of 16, got " +
        c10::str(a.q.sizes()) + " x " + c10::str(b.q.sizes()) + "^T");
  // _scaled_mm's second operand is column-major ([k, n] with stride 1 along k): b's rows, transposed as a view. With
  // row-wise scales it writes bf16 or fp16 only; fp32 is a cast of bf16.
  const at::ScalarType written = out == at::kHalf ? at::kHalf : at::kBFloat16;
  const at::Tensor y = at::_scaled_mm(a.q, b.q.t(), a.scale.view({-1, 1}), b.scale.view({1, -1}), {}, {}, written,
                                      /*use_fast_accum=*/false);
  return out == written ? y : y.to(out);
}

bool fp8_matmuls_supported(const at::Device& device) {
  if (device.is_cpu()) return true;
#ifdef RANKTUNE_HAVE_CUDA
  if (device.is_cuda()) {
    const cudaDeviceProp* p = at::cuda::getDeviceProperties(device.index() < 0 ? 0 : device.index());
    return p->major > 8 || (p->major == 8 && p->minor >= 9);
  }
#endif
  return false;
}

}  // namespace ranktune
