#include "ranktune/model/activation_checkpoint.h"

#include <ATen/core/ivalue.h>
#include <torch/autograd.h>

#include <optional>
#include <utility>
#include <vector>

#include "ranktune/core/pinned_bytes.h"
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

// A weak link to an offloaded input, held as the base class (the weak pointer needs a complete type; lock() casts it
// back).
using WeakInput = std::optional<c10::weak_intrusive_ptr<torch::CustomClassHolder>>;

// A layer input waiting on the host for its backward. saved_data holds IValues; a capsule is the IValue that carries a
// C++ object (here the copy's CUDA events); the backward erases it once the input is back.
struct OffloadedInput : torch::CustomClassHolder {
  // The input's elements in pieces (pinned_pieces: power-of-two sizes, which the caching host allocator pins without
  // rounding up): pinned for a device input; a CPU input's own copy, cut the same way.
  std::vector<at::Tensor> host;
  std::vector<std::int64_t> sizes;  // the input's shape and dtype
  at::ScalarType dtype = at::kFloat;
  at::Device device{at::kCPU};
  std::shared_ptr<OffloadBudget> budget;  // given `reserved` back once the input is let go
  std::int64_t reserved = 0;
  // intrusive_ptr calls release_resources only when weak references remain (a GPU input's chain); without any it
  // deletes at once: both paths give the bytes back, once.
  ~OffloadedInput() override { give_back(); }
  void give_back() {
    if (budget) budget->give(std::exchange(reserved, 0));
    budget.reset();
  }
  // The input offloaded just before this one on this thread and device: in backward the layer that comes next. Weak:
  // an earlier step's inputs, already consumed, expire instead of being kept alive by the chain.
  WeakInput earlier;
#ifdef RANKTUNE_HAVE_CUDA
  std::optional<c10::cuda::CUDAEvent> copied;   // recorded on the side stream after the device -> host copy
  at::Tensor prefetched;                        // the device copy, started early by the later layer's backward
  std::optional<c10::cuda::CUDAEvent> arrived;  // recorded on the side stream after that host -> device copy
#endif
  // Called when the last strong reference goes while weak ones remain (the next input's `earlier`, last_offloaded):
  // those keep the object itself until they go too, so the buffers are let go here, not only in the destructor:
  // otherwise a consumed step's pinned inputs would stay until the next forward replaced the chain.
  void release_resources() override {
    give_back();
    host.clear();
    earlier.reset();
#ifdef RANKTUNE_HAVE_CUDA
    copied.reset();
    prefetched = at::Tensor();
    arrived.reset();
#endif
  }
};

c10::intrusive_ptr<OffloadedInput> lock(const WeakInput& weak) {
  if (!weak) return {};
  return c10::static_intrusive_pointer_cast<OffloadedInput>(weak->lock());
}

#ifdef RANKTUNE_HAVE_CUDA
// The last input offloaded by this thread (a forward runs its layers in order on one thread).
thread_local WeakInput last_offloaded;
#endif

// Host tensors for the pieces of `x` (pinned_pieces, counted in elements), pinned or not, and the copy of x's
// contiguous elements into them (asynchronous from a device into pinned memory).
void copy_to_pieces(OffloadedInput& o, const at::Tensor& x, bool pinned) {
  const at::Tensor flat = x.contiguous().view(-1);
  const auto element = static_cast<std::int64_t>(flat.element_size());
  o.sizes = x.sizes().vec();
  o.dtype = x.scalar_type();
  std::int64_t offset = 0;
  for (const std::int64_t bytes : pinned_pieces(flat.numel() * element)) {
    const std::int64_t n = bytes / element;
    o.host.push_back(at::empty({n}, flat.options().device(at::kCPU).pinned_memory(pinned)));
    o.host.back().copy_(flat.narrow(0, offset, n), /*non_blocking=*/pinned);
    offset += n;
  }
}

// The input rebuilt on `device` from its pieces (asynchronous from pinned memory), allocated on the current stream.
at::Tensor copy_from_pieces(const OffloadedInput& o, const at::Device& device, bool non_blocking) {
  at::Tensor x = at::empty(o.sizes, at::TensorOptions().dtype(o.dtype).device(device));
  at::Tensor flat = x.view(-1);
  std::int64_t offset = 0;
  for (const at::Tensor& piece : o.host) {
    flat.narrow(0, offset, piece.numel()).copy_(piece, non_blocking);
    offset += piece.numel();
  }
  return x;
}

// Starts the copy of x to the host. On CUDA it runs on a side stream, so the forward of this layer and the next ones
// overlap it; x's memory goes back to the allocator once the copy has read it (record_stream), not when x is freed.
c10::intrusive_ptr<OffloadedInput> offload_input(const at::Tensor& x) {
  auto o = c10::make_intrusive<OffloadedInput>();
  o->device = x.device();
  if (x.device().is_cpu()) {
    copy_to_pieces(*o, x, /*pinned=*/false);  // nothing to move; a separate copy, so the path is the device one's
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
    {
      c10::cuda::CUDAStreamGuard on_side(side);
      copy_to_pieces(*o, src, /*pinned=*/true);
    }
    src.record_stream(side);
    o->copied.emplace();
    o->copied->record(side);
    if (const c10::intrusive_ptr<OffloadedInput> before = lock(last_offloaded); before && before->device == o->device)
      o->earlier = last_offloaded;
    last_offloaded = c10::weak_intrusive_ptr<torch::CustomClassHolder>(o);
    return o;
  }
#endif
  copy_to_pieces(*o, x, /*pinned=*/false);  // another device: plain synchronous copies
  return o;
}

// Starts bringing a CUDA input back on a side stream, after its copy out, so that the host -> device copy overlaps
// the backward of the layer that runs before it is needed. Once per input; nothing to do on the CPU.
void prefetch_input(OffloadedInput& o) {
#ifdef RANKTUNE_HAVE_CUDA
  if (!o.copied || o.prefetched.defined()) return;
  const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, o.device.index());
  o.copied->block(side);
  {
    c10::cuda::CUDAStreamGuard on_side(side);
    o.prefetched = copy_from_pieces(o, o.device, /*non_blocking=*/true);  // the host allocator waits for these copies
  }
  o.arrived.emplace();
  o.arrived->record(side);
#else
  (void)o;
#endif
}

// The input back on its device, ordered on the current stream after the copy out (or after the prefetch): no host
// synchronisation.
at::Tensor reload_input(OffloadedInput& o) {
  if (o.device.is_cpu()) return copy_from_pieces(o, o.device, /*non_blocking=*/false);
#ifdef RANKTUNE_HAVE_CUDA
  if (o.copied) {
    const c10::cuda::CUDAStream compute = c10::cuda::getCurrentCUDAStream(o.device.index());
    if (o.prefetched.defined()) {
      o.arrived->block(compute);
      at::Tensor x = std::move(o.prefetched);
      x.record_stream(compute);  // made on the side stream, used and freed on this one
      return x;
    }
    o.copied->block(compute);
    return copy_from_pieces(o, o.device, /*non_blocking=*/true);
  }
#endif
  return copy_from_pieces(o, o.device, /*non_blocking=*/false);
}

struct RecomputedBlock : public torch::autograd::Function<RecomputedBlock> {
  // Runs with gradients off (autograd::Function does that): nothing inside the layer is saved.
  // The mask is optional<Tensor> because autograd takes an undefined at::Tensor argument for a missing input.
  // With offload x is not saved for backward (that would hold it on the device): the host copy is.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, DecoderBlockImpl* block, RopeCache rope,
                            const std::optional<at::Tensor>& mask, bool offload,
                            std::shared_ptr<OffloadBudget> budget) {
    // What the copy will pin: a device input's pieces come from the caching host allocator, the last rounded up.
    const auto asked = static_cast<std::int64_t>(x.nbytes());
    const std::int64_t bytes = x.is_cuda() ? pinned_block_bytes(asked) : asked;
    if (offload && (!budget || budget->take(bytes))) {
      c10::intrusive_ptr<OffloadedInput> o = offload_input(x);
      o->budget = std::move(budget);
      o->reserved = o->budget ? bytes : 0;
      ctx->saved_data["offloaded"] = at::IValue::make_capsule(std::move(o));
    } else {
      ctx->save_for_backward({x});
    }
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
    at::Tensor x;
    if (offloaded == ctx->saved_data.end()) {
      x = ctx->get_saved_variables().at(0);
    } else {
      auto& mine = static_cast<OffloadedInput&>(*offloaded->second.toCapsule());
      x = reload_input(mine);
      // The layer before this one is, in backward, the next: its input comes back while this layer recomputes.
      if (const c10::intrusive_ptr<OffloadedInput> next = lock(mine.earlier)) prefetch_input(*next);
      // The node outlives its backward as long as the graph's output does (LibTorch releases saved variables after
      // the backward, not saved_data): the pinned copy goes now (its copies' events guard the reuse).
      ctx->saved_data.erase(offloaded);
    }
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
    return {input.grad(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool OffloadBudget::take(std::int64_t bytes) {
  std::int64_t now = held_.load();
  do {
    if (bytes > max_ - now) {
      ++refused_;
      return false;
    }
  } while (!held_.compare_exchange_weak(now, now + bytes));
  return true;
}

at::Tensor activation_checkpoint_forward(DecoderBlockImpl& block, const at::Tensor& x, const RopeCache& rope,
                                         const at::Tensor& mask, bool offload,
                                         const std::shared_ptr<OffloadBudget>& budget) {
  if (!at::GradMode::is_enabled()) return block.forward(x, rope, mask);  // evaluation: nothing would be saved anyway
  const at::Tensor input = x.requires_grad() ? x : x.detach().requires_grad_(true);
  return RecomputedBlock::apply(input, &block, rope, mask.defined() ? std::optional<at::Tensor>(mask) : std::nullopt,
                                offload, budget);
}

}  // namespace ranktune
