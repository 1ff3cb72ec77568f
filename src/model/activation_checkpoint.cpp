#include "ranktune/model/activation_checkpoint.h"

#include <ATen/core/ivalue.h>
#include <torch/autograd.h>

#include <optional>

#include "ranktune/model/rng_state.h"

#ifdef RANKTUNE_HAVE_CUDA
#include <c10/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace ranktune {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// A layer input waiting on the host for its backward. saved_data holds IValues; a capsule is the IValue that carries a
// C++ object (here the copy's CUDA event) for exactly the context's lifetime.
struct OffloadedInput : torch::CustomClassHolder {
  at::Tensor host;  // pinned for a device input; a CPU input's own copy
  at::Device device{at::kCPU};
#ifdef RANKTUNE_HAVE_CUDA
  std::optional<c10::cuda::CUDAEvent> copied;  // recorded on the side stream after the device -> host copy
#endif
};

// Starts the copy of x to the host. On CUDA it runs on a side stream, so the forward of this layer and the next ones
// overlap it; x's memory goes back to the allocator once the copy has read it (record_stream), not when x is freed.
c10::intrusive_ptr<OffloadedInput> offload_input(const at::Tensor& x) {
  auto o = c10::make_intrusive<OffloadedInput>();
  o->device = x.device();
  if (x.device().is_cpu()) {
    o->host = x.clone();  // nothing to move; a separate copy, so the path is the device one's
    return o;
  }
#ifdef RANKTUNE_HAVE_CUDA
  if (x.is_cuda()) {
    const c10::DeviceIndex index = x.device().index();
    const at::Tensor src = x.contiguous();
    const c10::cuda::CUDAStream compute = c10::cuda::getCurrentCUDAStream(index);
    const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, index);
    c10::cuda::CUDAEvent written;  // src is complete once the compute stream has reached this point
    written.record(compute);
    written.block(side);
    o->host = at::empty(src.sizes(), src.options().device(at::kCPU).pinned_memory(true));
    {
      c10::cuda::CUDAStreamGuard on_side(side);
      o->host.copy_(src, /*non_blocking=*/true);
    }
    src.record_stream(side);
    o->copied.emplace();
    o->copied->record(side);
    return o;
  }
#endif
  o->host = x.to(at::kCPU);  // another device: a plain synchronous copy
  return o;
}

// The input back on its device, ordered on the current stream after the copy out: no host synchronisation.
at::Tensor reload_input(OffloadedInput& o) {
  if (o.device.is_cpu()) return o.host;
#ifdef RANKTUNE_HAVE_CUDA
  if (o.copied) {
    o.copied->block(c10::cuda::getCurrentCUDAStream(o.device.index()));
    return o.host.to(o.device, /*non_blocking=*/true);
  }
#endif
  return o.host.to(o.device);
}

struct RecomputedBlock : public torch::autograd::Function<RecomputedBlock> {
  // Runs with gradients off (autograd::Function does that): nothing inside the layer is saved.
  // The mask is optional<Tensor> because autograd takes an undefined at::Tensor argument for a missing input.
  // With offload x is not saved for backward (that would hold it on the device): the host copy is.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, DecoderBlockImpl* block, RopeCache rope,
                            const std::optional<at::Tensor>& mask, bool offload) {
    if (offload) ctx->saved_data["offloaded"] = at::IValue::make_capsule(offload_input(x));
    else ctx->save_for_backward({x});
    ctx->saved_data["block"] = reinterpret_cast<std::int64_t>(block);
    ctx->saved_data["cos"] = rope.cos;
    ctx->saved_data["sin"] = rope.sin;
    ctx->saved_data["mask"] = mask.value_or(at::Tensor());
    const bool draws = block->is_training();  // only training mode draws random numbers (LoRA dropout)
    ctx->saved_data["rng"] = draws ? device_rng_state(x.device()) : at::Tensor();
    return block->forward(x, rope, mask.value_or(at::Tensor()));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto offloaded = ctx->saved_data.find("offloaded");
    const at::Tensor x = offloaded == ctx->saved_data.end()
                             ? ctx->get_saved_variables().at(0)
                             : reload_input(static_cast<OffloadedInput&>(*offloaded->second.toCapsule()));
    auto* block = reinterpret_cast<DecoderBlockImpl*>(ctx->saved_data["block"].toInt());
    const RopeCache rope{ctx->saved_data["cos"].toTensor(), ctx->saved_data["sin"].toTensor()};
    const at::Tensor rng = ctx->saved_data["rng"].toTensor();
    const at::Tensor mask = ctx->saved_data["mask"].toTensor();

    at::Tensor input = x.detach().requires_grad_(true);
    at::Tensor out;
    {
      const DeviceRngReplay replay(x.device(), rng);
      at::AutoGradMode grad_on(true);
      out = block->forward(input, rope, mask);
    }
    torch::autograd::backward({out}, {grad_out.at(0)});
    return {input.grad(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor activation_checkpoint_forward(DecoderBlockImpl& block, const at::Tensor& x, const RopeCache& rope,
                                         const at::Tensor& mask, bool offload) {
  if (!at::GradMode::is_enabled()) return block.forward(x, rope, mask);  // evaluation: nothing would be saved anyway
  const at::Tensor input = x.requires_grad() ? x : x.detach().requires_grad_(true);
  return RecomputedBlock::apply(input, &block, rope, mask.defined() ? std::optional<at::Tensor>(mask) : std::nullopt,
                                offload);
}

}  // namespace ranktune
