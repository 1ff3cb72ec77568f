#include "ranktune/model/activation_checkpoint.h"

#include <ATen/Context.h>
#include <torch/autograd.h>

#include <mutex>
#include <optional>

namespace ranktune {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The state of the default generator of `device`, or an undefined tensor when it has none we can restore.
at::Tensor rng_state(const at::Device& device) {
  at::Generator gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_rng_state(const at::Device& device, const at::Tensor& state) {
  at::Generator gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

struct RecomputedBlock : public torch::autograd::Function<RecomputedBlock> {
  // Runs with gradients off (autograd::Function does that): nothing inside the layer is saved.
  // The mask is optional<Tensor> because autograd takes an undefined at::Tensor argument for a missing input.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, DecoderBlockImpl* block, RopeCache rope,
                            const std::optional<at::Tensor>& mask) {
    ctx->save_for_backward({x});
    ctx->saved_data["block"] = reinterpret_cast<std::int64_t>(block);
    ctx->saved_data["cos"] = rope.cos;
    ctx->saved_data["sin"] = rope.sin;
    ctx->saved_data["mask"] = mask.value_or(at::Tensor());
    const bool draws = block->is_training();  // only training mode draws random numbers (LoRA dropout)
    ctx->saved_data["rng"] = draws ? rng_state(x.device()) : at::Tensor();
    return block->forward(x, rope, mask.value_or(at::Tensor()));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const at::Tensor x = ctx->get_saved_variables().at(0);
    auto* block = reinterpret_cast<DecoderBlockImpl*>(ctx->saved_data["block"].toInt());
    const RopeCache rope{ctx->saved_data["cos"].toTensor(), ctx->saved_data["sin"].toTensor()};
    const at::Tensor rng = ctx->saved_data["rng"].toTensor();
    const at::Tensor mask = ctx->saved_data["mask"].toTensor();

    at::Tensor input = x.detach().requires_grad_(true);
    at::Tensor out;
    {
      at::Tensor current;
      if (rng.defined()) {
        current = rng_state(x.device());
        set_rng_state(x.device(), rng);
      }
      at::AutoGradMode grad_on(true);
      out = block->forward(input, rope, mask);
      if (rng.defined()) set_rng_state(x.device(), current);
    }
    torch::autograd::backward({out}, {grad_out.at(0)});
    return {input.grad(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor activation_checkpoint_forward(DecoderBlockImpl& block, const at::Tensor& x, const RopeCache& rope,
                                         const at::Tensor& mask) {
  if (!at::GradMode::is_enabled()) return block.forward(x, rope, mask);  // evaluation: nothing would be saved anyway
  const at::Tensor input = x.requires_grad() ? x : x.detach().requires_grad_(true);
  return RecomputedBlock::apply(input, &block, rope, mask.defined() ? std::optional<at::Tensor>(mask) : std::nullopt);
}

}  // namespace ranktune
