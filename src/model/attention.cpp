#include "ranktune/model/attention.h"

#include <ATen/ATen.h>

#include "ranktune/core/error.h"

namespace ranktune {

AttentionImpl::AttentionImpl(const LlamaConfig& c, const at::TensorOptions& options)
    : num_heads_(c.num_heads),
      num_kv_heads_(c.num_kv_heads),
      head_dim_(c.head_dim),
      sliding_window_(c.sliding_window),
      source_(c.source) {
  const std::int64_t q_dim = c.num_heads * c.head_dim;
  const std::int64_t kv_dim = c.num_kv_heads * c.head_dim;
  q_proj = register_module("q_proj", Linear(c.hidden_size, q_dim, c.qkv_bias, options));
  k_proj = register_module("k_proj", Linear(c.hidden_size, kv_dim, c.qkv_bias, options));
  v_proj = register_module("v_proj", Linear(c.hidden_size, kv_dim, c.qkv_bias, options));
  o_proj = register_module("o_proj", Linear(q_dim, c.hidden_size, c.o_bias, options));
}

at::Tensor document_causal_mask(const at::Tensor& documents) {
  if (!documents.defined()) return {};
  TORCH_CHECK(documents.dim() == 2, "documents must be [B, T], got ", documents.sizes());
  const std::int64_t seq = documents.size(1);
  const at::Tensor causal =
      at::ones({seq, seq}, at::TensorOptions().dtype(at::kBool).device(documents.device())).tril();
  return (documents.unsqueeze(2) == documents.unsqueeze(1)).logical_and_(causal).unsqueeze(1);
}

at::Tensor document_lengths(const at::Tensor& documents) {
  TORCH_CHECK(documents.dim() == 2, "documents must be [B, T], got ", documents.sizes());
  const at::Tensor d = documents.to(at::kCPU, at::kLong).contiguous();
  const std::int64_t batch = d.size(0), seq = d.size(1);
  // A document starts at every row start and wherever the index changes within a row.
  at::Tensor starts = at::ones({batch, seq}, at::kBool);
  if (seq > 1) starts.narrow(1, 1, seq - 1).copy_(d.narrow(1, 1, seq - 1) != d.narrow(1, 0, seq - 1));
  const at::Tensor begin = starts.reshape({-1}).nonzero().reshape({-1});
  return at::cat({begin, at::full({1}, batch * seq, at::kLong)}).to(at::kInt);
}

at::Tensor attention_mask(const at::Tensor& documents, at::Device device, at::ScalarType dtype, std::int64_t head_dim,
                          bool varlen) {
  if (!documents.defined()) return {};
  const bool flash = varlen && device.is_cuda() && (dtype == at::kBFloat16 || dtype == at::kHalf) && head_dim <= 256 &&
                     head_dim % 8 == 0;
  const bool pinned = documents.is_cpu() && device.is_cuda() && documents.is_pinned();
  if (flash)
    return pinned ? document_lengths(documents).pin_memory().to(device, /*non_blocking=*/true)
                  : document_lengths(documents).to(device);
  return document_causal_mask(documents.to(device, /*non_blocking=*/pinned));
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const RopeCache& rope, const at::Tensor& mask) {
  const std::int64_t batch = x.size(0);
  const std::int64_t seq = x.size(1);
  if (sliding_window_ > 0 && seq > sliding_window_) {
    throw ConfigError("sequence length " + std::to_string(seq) + " exceeds the sliding window " +
                          std::to_string(sliding_window_) + " of " + source_ +
                          "; ranktune attends over the whole sequence and would not match the model",
                      "use train.seq_len <= " + std::to_string(sliding_window_));
  }
  at::Tensor q = q_proj->forward(x).view({batch, seq, num_heads_, head_dim_}).transpose(1, 2);
  at::Tensor k = k_proj->forward(x).view({batch, seq, num_kv_heads_, head_dim_}).transpose(1, 2);
  at::Tensor v = v_proj->forward(x).view({batch, seq, num_kv_heads_, head_dim_}).transpose(1, 2);
  q = rope_apply(q, rope, fused_rope);
  k = rope_apply(k, rope, fused_rope);

  if (mask.defined() && mask.dim() == 1) {
    // Packed documents through the flash kernel's variable-length form: the batch is one sequence of
    // [B*T, heads, head_dim] cut at the cumulative lengths, each document causal on its own, grouped K/V read in
    // place. rope_apply keeps q's [B, T, heads, head_dim] storage, so the flattening is a view, not a copy.
    TORCH_CHECK(mask.scalar_type() == at::kInt && q.is_cuda(), "document lengths must be int32 on the GPU");
    const auto flatten = [&](const at::Tensor& t) { return t.transpose(1, 2).reshape({batch * seq, -1, head_dim_}); };
    const auto out = at::_flash_attention_forward(flatten(q), flatten(k), flatten(v), mask, mask, seq, seq,
                                                  /*dropout_p=*/0.0, /*is_causal=*/true, /*return_debug_mask=*/false);
    return o_proj->forward(std::get<0>(out).view({batch, seq, num_heads_ * head_dim_}));
  }
  const bool grouped = num_heads_ != num_kv_heads_;
  // Only the flash kernel reads grouped K/V in place (enable_gqa); elsewhere repeating them keeps the fused
  // backends available instead of falling back to the math kernel. Flash takes no mask.
  const bool native_gqa = grouped && !mask.defined() && q.is_cuda() &&
                          (q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf) && head_dim_ <= 256;
  if (grouped && !native_gqa) {
    const std::int64_t rep = num_heads_ / num_kv_heads_;
    k = k.unsqueeze(2).expand({batch, num_kv_heads_, rep, seq, head_dim_}).reshape({batch, num_heads_, seq, head_dim_});
    v = v.unsqueeze(2).expand({batch, num_kv_heads_, rep, seq, head_dim_}).reshape({batch, num_heads_, seq, head_dim_});
  }
  if (mask.defined()) {
    TORCH_CHECK(mask.dim() == 4 && mask.size(0) == batch && mask.size(2) == seq && mask.size(3) == seq,
                "attention mask must be [B, 1, T, T] for ", x.sizes(), ", got ", mask.sizes());
  }
  // No mask: exactly the causal call of a row of one document, so such rows keep the flash kernel and its numbers.
  const at::Tensor o = mask.defined()
                           ? at::scaled_dot_product_attention(q, k, v, mask, /*dropout_p=*/0.0, /*is_causal=*/false)
                           : at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                                              /*is_causal=*/true, /*scale=*/std::nullopt, native_gqa);
  return o_proj->forward(o.transpose(1, 2).reshape({batch, seq, num_heads_ * head_dim_}));
}

}  // namespace ranktune
