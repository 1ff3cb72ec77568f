// profile_category on the names the profile table meets: CUDA kernel names as Kineto reports them on Hopper (cuBLAS
// nvjet/xmma gemms, flash/cutlass attention, ATen's templated elementwise and reduce kernels, NCCL) and ATen CPU ops.
#include <gtest/gtest.h>

#include "ranktune/train/profile.h"

namespace ranktune {
namespace {

TEST(ProfileCategory, GpuKernels) {
  EXPECT_EQ(profile_category("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NTN"), "matmul");
  EXPECT_EQ(profile_category("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1"),
            "matmul");
  EXPECT_EQ(profile_category("void flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4>>(...)"),
            "attention");
  EXPECT_EQ(profile_category("fmha_cutlassB_bf16_aligned_64x64_k64_sm80(AttentionBackwardKernel)"), "attention");
  EXPECT_EQ(profile_category("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x128"),
            "attention");
  EXPECT_EQ(profile_category("void at::native::vectorized_elementwise_kernel<4, at::native::bfloat16_copy_kernel_cuda("
                             "at::TensorIteratorBase&)::{lambda()#1}>"),
            "copy/cast");
  EXPECT_EQ(profile_category("void at::native::(anonymous namespace)::CatArrayBatchedCopy<...>"), "copy/cast");
  EXPECT_EQ(profile_category("Memcpy HtoD (Pageable -> Device)"), "copy/cast");
  EXPECT_EQ(profile_category("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>"),
            "elementwise");
  EXPECT_EQ(profile_category("void at::native::vectorized_elementwise_kernel<4, at::native::rsqrt_kernel_cuda>"),
            "norm");
  EXPECT_EQ(profile_category("void at::native::(anonymous namespace)::vectorized_rms_norm_kernel<float>"), "norm");
  EXPECT_EQ(profile_category("void at::native::vectorized_elementwise_kernel<4, at::native::silu_kernel>"), "swiglu");
  EXPECT_EQ(profile_category("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float>"), "loss");
  EXPECT_EQ(profile_category("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, "
                             "at::native::NormTwoOps<float, float, float>, unsigned int, float, 4>>"),
            "optimizer");  // the gradient clip's norm, not RMSNorm
  EXPECT_EQ(profile_category("void at::native::multi_tensor_apply_kernel<FusedAdamMathFunctor<float, 4>>"),
            "optimizer");
  EXPECT_EQ(profile_category("ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevKernelArgsStorage<4096ul>)"), "nccl");
  EXPECT_EQ(profile_category("void at::native::normal_kernel<float>"), "other");  // an RNG fill, not a norm
}

TEST(ProfileCategory, CpuOps) {
  EXPECT_EQ(profile_category("aten::mm"), "matmul");
  EXPECT_EQ(profile_category("aten::addmm"), "matmul");
  EXPECT_EQ(profile_category("aten::_scaled_dot_product_flash_attention_for_cpu_backward"), "attention");
  EXPECT_EQ(profile_category("aten::_foreach_lerp_"), "optimizer");
  EXPECT_EQ(profile_category("aten::_fused_adamw_"), "optimizer");
  EXPECT_EQ(profile_category("aten::linalg_vector_norm"), "optimizer");
  EXPECT_EQ(profile_category("aten::cross_entropy_loss"), "loss");
  EXPECT_EQ(profile_category("aten::_log_softmax"), "loss");
  EXPECT_EQ(profile_category("LinearCrossEntropyBackward"), "loss");
  EXPECT_EQ(profile_category("aten::rms_norm"), "norm");
  EXPECT_EQ(profile_category("ranktune::rope"), "rope");
  EXPECT_EQ(profile_category("aten::_to_copy"), "copy/cast");
  EXPECT_EQ(profile_category("aten::copy_"), "copy/cast");
  EXPECT_EQ(profile_category("aten::cat"), "copy/cast");
  EXPECT_EQ(profile_category("aten::mul"), "elementwise");
  EXPECT_EQ(profile_category("autograd::engine::evaluate_function: MmBackward0"), "autograd");
  EXPECT_EQ(profile_category("aten::view"), "other");
}

}  // namespace
}  // namespace ranktune
