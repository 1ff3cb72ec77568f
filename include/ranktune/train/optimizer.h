// defines: AdamW, the optimizer of every ranktune run: decoupled weight decay in two groups, fp32 master weights for
// low-precision parameters, at::_fused_adamw_ on GPU and at::_foreach_* on CPU (or, with `one_pass`, the one-pass
// kernel of kernels/adamw.h for the low-precision ones), and its state as named tensors for checkpoints. Numerics
// follow torch.optim.AdamW (tests/reference/make_optimizer_fixtures.py checks them).
//
//   AdamW opt(model->named_parameters(), adamw_options_from_config(cfg.train));  // trainable ones are kept
//   ... backward ...;  opt.step(lr_at(schedule, step));
//   checkpoint: opt.state()  ->  OrderedDict "<param>.exp_avg" / ".exp_avg_sq" / ".step" / ".master"
//   resume:     opt.load_state(dict)  (names, shapes and dtypes must match; CheckpointError otherwise)
//
// Weight-decay groups: tensors with ndim >= 2 (linear weights, embeddings, LoRA A/B) decay, ndim < 2 (norm weights,
// biases) do not (the nanoGPT/llm.c rule; for Llama it is what HF Trainer's "no decay for bias and norm" gives).
// Master weights: a trainable bf16/fp16 parameter gets an fp32 copy; the update runs on the copy and is rounded back
// into the parameter, so small updates are not lost to bf16 rounding. Gradients are not zeroed here (see
// grads.h: zero_grads keeps DDP's bucket views alive).
#pragma once

#include <cstdint>

#include <ATen/Tensor.h>

#include <string>
#include <vector>

#include "ranktune/distributed/named_tensors.h"

namespace ranktune {

struct TrainConfig;

enum class AdamWImpl { automatic, fused, foreach };  // automatic: fused on CUDA, foreach on CPU (torch's choices)

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
  AdamWImpl impl = AdamWImpl::automatic;
  // Low-precision parameters step on fp32 copies of their gradients; at most this many bytes of such copies exist at
  // once (the step runs in chunks of parameters). Without it, half of an 8B model on one GPU needed 15 GiB more.
  std::int64_t max_cast_bytes = std::int64_t{1} << 30;
  // Low-precision parameters step in one pass (kernels/adamw.h: no fp32 gradient copies, no copy back); the master,
  // moments and step counts are the same tensors either way, so checkpoints do not depend on it.
  bool one_pass = false;
};

AdamWOptions adamw_options_from_config(const TrainConfig& t);

// True when the tensor goes into the weight-decay group (ndim >= 2).
bool adamw_decays(const at::Tensor& param);

class AdamW {
 public:
  // Keeps the parameters with requires_grad, in the given order. Throws UsageError when none is trainable.
  AdamW(const NamedTensors& params, AdamWOptions options);

  // One update at learning rate `lr` for every kept parameter that has a gradient (as torch: no gradient, no update,
  // its step count stays). grad_scale: undefined, or gradient clipping's coefficient (clip_coefficient, grads.h), an
  // fp32 scalar tensor: the gradients are taken as `grad.mul_(grad_scale)` would leave them (the one-pass slots fold
  // it into their kernel, the other groups multiply first), bit for bit clip_grad_norm followed by step(lr).
  void step(double lr, const at::Tensor& grad_scale = {});

  NamedTensors state() const;
  void load_state(const NamedTensors& saved);

  const AdamWOptions& options() const { return options_; }
  // One line for the start-up log: the groups, their sizes, the implementation, master weights.
  std::string describe() const;

 private:
  struct Slot {
    std::string name;
    at::Tensor param;
    at::Tensor master;  // fp32 copy when param is low precision, else undefined
    at::Tensor exp_avg, exp_avg_sq, step;
    bool decay = false;
    const at::Tensor& work() const { return master.defined() ? master : param; }
  };
  void step_group(std::vector<Slot*>& slots, double lr, double weight_decay);
  void step_one_pass(const std::vector<Slot*>& slots, double lr, double weight_decay, const at::Tensor& grad_scale);

  AdamWOptions options_;
  std::vector<Slot> slots_;
};

}  // namespace ranktune
