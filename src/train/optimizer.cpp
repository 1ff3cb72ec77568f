#include "ranktune/train/optimizer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <map>
#include <sstream>
#include <tuple>

#include "ranktune/core/config.h"
#include "ranktune/core/error.h"
#include "ranktune/kernels/adamw.h"

namespace ranktune {
namespace {

bool low_precision(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf; }

std::string shape_of(const at::Tensor& t) {
  std::ostringstream os;
  os << t.sizes() << " " << c10::toString(t.scalar_type());
  return os.str();
}

std::string count_text(long n) {
  std::ostringstream os;
  os.precision(3);
  if (n >= 1'000'000'000) os << n / 1e9 << "B";
  else if (n >= 1'000'000) os << n / 1e6 << "M";
  else if (n >= 1'000) os << n / 1e3 << "K";
  else os << n;
  return os.str();
}

}  // namespace

AdamWOptions adamw_options_from_config(const TrainConfig& t) {
  AdamWOptions o;
  o.beta1 = t.beta1;
  o.beta2 = t.beta2;
  o.eps = t.eps;
  o.weight_decay = t.weight_decay;
  o.one_pass = t.adamw_one_pass;
  return o;
}

bool adamw_decays(const at::Tensor& param) { return param.dim() >= 2; }

AdamW::AdamW(const NamedTensors& params, AdamWOptions options) : options_(options) {
  at::NoGradGuard no_grad;
  for (const auto& item : params) {
    const at::Tensor& p = item.value();
    if (!p.requires_grad()) continue;
    if (!at::isFloatingType(p.scalar_type()))
      throw UsageError("AdamW: parameter '" + item.key() + "' has dtype " + c10::toString(p.scalar_type()) +
                       "; only floating-point parameters can be trained");
    Slot s;
    s.name = item.key();
    s.param = p;
    if (low_precision(p)) s.master = p.detach().to(at::kFloat).clone();
    s.exp_avg = at::zeros_like(s.work(), at::MemoryFormat::Preserve);
    s.exp_avg_sq = at::zeros_like(s.work(), at::MemoryFormat::Preserve);
    s.step = at::zeros({}, p.options().dtype(at::kFloat));
    s.decay = adamw_decays(p);
    slots_.push_back(std::move(s));
  }
  if (slots_.empty())
    throw UsageError("AdamW: none of the " + std::to_string(params.size()) + " parameters requires a gradient",
                     "with LoRA, check lora.target_modules; for full fine-tuning, lora.r must be 0");
}

void AdamW::step(double lr, const at::Tensor& grad_scale) {
  at::NoGradGuard no_grad;
  // Fused and foreach kernels take one device and dtype per call, and weight decay is per group; the one-pass slots
  // (low-precision parameters when options_.one_pass) form groups of their own.
  std::map<std::tuple<bool, std::string, int, bool>, std::vector<Slot*>> groups;
  for (Slot& s : slots_) {
    if (!s.param.grad().defined()) continue;
    const bool one_pass = options_.one_pass && s.master.defined();
    groups[{s.decay, s.work().device().str(), static_cast<int>(s.work().scalar_type()), one_pass}].push_back(&s);
  }
  for (auto& [key, slots] : groups) {
    const double decay = std::get<0>(key) ? options_.weight_decay : 0.0;
    const at::Tensor scale = grad_scale.defined() ? grad_scale.to(slots.front()->param.device()) : at::Tensor();
    if (std::get<3>(key)) {
      step_one_pass(slots, lr, decay, scale);
      continue;
    }
    if (scale.defined()) {  // the gradients scaled first, by the op clip_grad_norm runs
      std::vector<at::Tensor> grads;
      for (Slot* s : slots) grads.push_back(s->param.grad());
      at::_foreach_mul_(grads, scale);
    }
    std::vector<Slot*> chunk;  // its fp32 gradient copies stay within max_cast_bytes (one tensor may exceed it alone)
    std::int64_t cast = 0;
    for (Slot* s : slots) {
      const std::int64_t bytes = s->master.defined() ? s->param.numel() * 4 : 0;
      if (!chunk.empty() && cast + bytes > options_.max_cast_bytes) {
        step_group(chunk, lr, decay);
        chunk.clear();
        cast = 0;
      }
      chunk.push_back(s);
      cast += bytes;
    }
    if (!chunk.empty()) step_group(chunk, lr, decay);
  }
  for (auto& [key, slots] : groups)
    if (!std::get<3>(key))
      for (Slot* s : slots)
        if (s->master.defined()) s->param.copy_(s->master);
}

void AdamW::step_one_pass(const std::vector<Slot*>& slots, double lr, double weight_decay,
                          const at::Tensor& grad_scale) {
  std::vector<at::Tensor> params, grads, masters, exp_avgs, exp_avg_sqs, steps;
  for (Slot* s : slots) {
    const at::Tensor& g = s->param.grad();
    if (g.is_sparse()) throw UsageError("AdamW: parameter '" + s->name + "' has a sparse gradient (not supported)");
    params.push_back(s->param);
    grads.push_back(g.contiguous());
    masters.push_back(s->master);
    exp_avgs.push_back(s->exp_avg);
    exp_avg_sqs.push_back(s->exp_avg_sq);
    steps.push_back(s->step);
  }
  at::_foreach_add_(steps, 1);
  adamw_master_step(params, grads, masters, exp_avgs, exp_avg_sqs, steps,
                    {lr, options_.beta1, options_.beta2, options_.eps, weight_decay}, grad_scale);
}

void AdamW::step_group(std::vector<Slot*>& slots, double lr, double weight_decay) {
  std::vector<at::Tensor> work, grads, exp_avgs, exp_avg_sqs, steps;
  for (Slot* s : slots) {
    const at::Tensor& g = s->param.grad();
    if (g.is_sparse()) throw UsageError("AdamW: parameter '" + s->name + "' has a sparse gradient (not supported)");
    work.push_back(s->work());
    grads.push_back(s->master.defined() ? g.to(at::kFloat) : g);
    exp_avgs.push_back(s->exp_avg);
    exp_avg_sqs.push_back(s->exp_avg_sq);
    steps.push_back(s->step);
  }
  const double b1 = options_.beta1, b2 = options_.beta2;
  const bool on_cuda = work.front().is_cuda();
  const bool fused = options_.impl == AdamWImpl::fused || (options_.impl == AdamWImpl::automatic && on_cuda);
  at::_foreach_add_(steps, 1);  // both paths take the incremented count, as torch does before its fused kernel
  if (fused) {
    at::_fused_adamw_(work, grads, exp_avgs, exp_avg_sqs, {}, steps, lr, b1, b2, weight_decay, options_.eps,
                      /*amsgrad=*/false, /*maximize=*/false);
    return;
  }
  // The operation order of torch.optim.AdamW(foreach=True) without capturable, so results agree to rounding.
  if (weight_decay != 0) at::_foreach_mul_(work, 1 - lr * weight_decay);
  at::_foreach_lerp_(exp_avgs, grads, 1 - b1);
  at::_foreach_mul_(exp_avg_sqs, b2);
  at::_foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - b2);
  std::vector<at::Scalar> step_size, bias2_sqrt;
  for (const at::Tensor& t : steps) {
    const double n = t.item<double>();
    step_size.emplace_back(-(lr / (1 - std::pow(b1, n))));
    bias2_sqrt.emplace_back(std::sqrt(1 - std::pow(b2, n)));
  }
  std::vector<at::Tensor> denom = at::_foreach_sqrt(exp_avg_sqs);
  at::_foreach_div_(denom, bias2_sqrt);
  at::_foreach_add_(denom, options_.eps);
  at::_foreach_addcdiv_(work, exp_avgs, denom, step_size);
}

NamedTensors AdamW::state() const {
  NamedTensors out;
  for (const Slot& s : slots_) {
    out.insert(s.name + ".exp_avg", s.exp_avg);
    out.insert(s.name + ".exp_avg_sq", s.exp_avg_sq);
    out.insert(s.name + ".step", s.step);
    if (s.master.defined()) out.insert(s.name + ".master", s.master);
  }
  return out;
}

void AdamW::load_state(const NamedTensors& saved) {
  const NamedTensors mine = state();
  for (const auto& item : saved)
    if (!mine.contains(item.key()))
      throw CheckpointError("optimizer state holds '" + item.key() + "', which this run does not train",
                            "resume with the same model and LoRA settings as the run that saved the checkpoint");
  at::NoGradGuard no_grad;
  for (const auto& item : mine) {
    const at::Tensor* given = saved.find(item.key());
    if (!given)
      throw CheckpointError("optimizer state lacks '" + item.key() + "'",
                            "resume with the same model and LoRA settings as the run that saved the checkpoint");
    if (!given->sizes().equals(item.value().sizes()) || given->scalar_type() != item.value().scalar_type())
      throw CheckpointError("optimizer state '" + item.key() + "' is " + shape_of(*given) + ", this run needs " +
                            shape_of(item.value()));
  }
  for (const auto& item : mine) item.value().copy_(saved[item.key()]);
  // The parameter is what the model computes with: it must be the rounded master, whatever the checkpoint held.
  for (Slot& s : slots_)
    if (s.master.defined()) s.param.copy_(s.master);
}

std::string AdamW::describe() const {
  long decay_n = 0, plain_n = 0, decay_t = 0, plain_t = 0, master_t = 0;
  for (const Slot& s : slots_) {
    (s.decay ? decay_n : plain_n) += s.param.numel();
    ++(s.decay ? decay_t : plain_t);
    if (s.master.defined()) ++master_t;
  }
  const bool cuda = slots_.front().param.is_cuda();
  const char* impl = options_.impl == AdamWImpl::fused || (options_.impl == AdamWImpl::automatic && cuda) ? "fused"
                                                                                                          : "foreach";
  std::ostringstream os;
  os << "AdamW (" << impl << ", betas " << options_.beta1 << "/" << options_.beta2 << ", eps " << options_.eps
     << "): weight decay " << options_.weight_decay << " on " << decay_t << " tensors (" << count_text(decay_n)
     << " params), none on " << plain_t << " tensors (" << count_text(plain_n) << " params)";
  if (master_t)
    os << "; fp32 master weights for " << master_t << " low-precision tensors"
       << (options_.one_pass ? ", stepped in one pass (train.adamw_one_pass)" : "");
  return os.str();
}

}  // namespace ranktune
