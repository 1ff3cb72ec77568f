// Memory: full fine-tune keeps weights (bf16 on GPU), their gradients, fp32 masters (GPU only) and two fp32 Adam
// moments; LoRA keeps the frozen base plus fp32 adapters with gradients and moments; QLoRA's base linears are NF4
// (about 0.516 bytes a weight) plus one dequantized linear in the compute dtype as a working set. Activations: the
// tensors one decoder layer saves for backward (saved_bytes_per_token), per token; with activation checkpointing only
// the layer input, and with its offload not even that (it waits in pinned host memory). Compute: 2 FLOPs per
// multiply-add, backward twice forward (once for frozen LoRA bases), attention 4*T*(num_heads*head_dim) per token per
// layer forward (causal halving ignored, as MFU conventions do).
#include "ranktune/plan/layer_cost.h"

#include <algorithm>
#include <initializer_list>
#include <sstream>
#include <tuple>
#include <utility>
#include <vector>

#include "ranktune/core/activation_checkpointing_layers.h"
#include "ranktune/core/error.h"
#include "ranktune/core/pinned_bytes.h"

namespace ranktune {
namespace {

bool targets(const TrainSetup& s, const char* name) {
  return std::find(s.lora_targets.begin(), s.lora_targets.end(), name) != s.lora_targets.end();
}

// Widths of one decoder layer's projections: q and attention output num_heads x head_dim, k and v
// num_kv_heads x head_dim (hidden_size only when head_dim is hidden_size / num_heads).
std::int64_t q_width(const LlamaConfig& m) { return m.num_heads * m.head_dim; }
std::int64_t kv_width(const LlamaConfig& m) { return m.num_kv_heads * m.head_dim; }

// LoRA adapter parameters of one layer: r * (in + out) per targeted projection.
std::int64_t lora_params(const LlamaConfig& m, const TrainSetup& s) {
  if (s.lora_r == 0) return 0;
  const std::int64_t d = m.hidden_size, q = q_width(m), kv = kv_width(m), f = m.intermediate_size, r = s.lora_r;
  std::int64_t p = 0;
  if (targets(s, "q")) p += r * (d + q);
  if (targets(s, "k")) p += r * (d + kv);
  if (targets(s, "v")) p += r * (d + kv);
  if (targets(s, "o")) p += r * (q + d);
  if (targets(s, "gate")) p += r * (d + f);
  if (targets(s, "up")) p += r * (d + f);
  if (targets(s, "down")) p += r * (f + d);
  return p;
}

// Each LoRA target's input width and whether it is in the MLP.
std::vector<std::tuple<const char*, std::int64_t, bool>> adapter_inputs(const LlamaConfig& m) {
  const std::int64_t d = m.hidden_size, q = q_width(m), f = m.intermediate_size;
  return {{"q", d, false},   {"k", d, false}, {"v", d, false},  {"o", q, false},
          {"gate", d, true}, {"up", d, true}, {"down", f, true}};
}

struct SavedPerToken {
  std::int64_t attention = 0, mlp = 0;
};

// Bytes one decoder layer saves for backward per token, split into the attention half (with the norms) and the MLP.
// Both GPU paths keep flash attention's q, k, v and output (fp32 log-sum-exp per head), the output being o_proj's
// input, and the SwiGLU op's gate and up. The fused path (train.kernels=fused) keeps besides, in the compute dtype:
// each RMSNorm's input (plus an fp32 inverse RMS); a norm's output only where something trained reads it (the trained
// q/k/v or gate/up weights, or their adapters without dropout: the three projections share one input, the base's own
// weight gradient is never taken under LoRA); down_proj's input (the SwiGLU product) only for a trained down_proj
// weight, since LoRA's down_proj recomputes it; each adapter's x A^T; with LoRA dropout, each adapter's own dropped
// input and its byte mask instead of the shared norm output. Planned against one H200's peaks (1.1B shape, 4 x 2048
// tokens, no checkpointing: tests/plan/test_loss_plan.cpp). The eager reference ops (train.kernels=eager) keep more:
// each RMSNorm an fp32 copy of its input (and, trained, its bf16 normalised output), each adapter an fp32 copy of its
// input (PEFT's order: the adapter runs in fp32; with dropout, the dropped copy and its mask) and an fp32 x A^T;
// planned against one H100's LoRA peak (same shape). The CPU keeps the older count (norm outputs, SwiGLU product and
// down_proj's input all kept in fp32; not measured), all of it in `attention`.
SavedPerToken saved_bytes_per_token(const LlamaConfig& m, const TrainSetup& s) {
  const std::int64_t d = m.hidden_size, q = q_width(m), kv = kv_width(m), f = m.intermediate_size;
  const std::int64_t act = s.on_gpu ? 2 : 4;
  if (!s.on_gpu) return {act * (6 * d + 3 * q + 2 * kv + 4 * f), 0};
  const bool lora = s.lora_r > 0, dropout = lora && s.lora_dropout > 0;
  auto adapted = [&](std::initializer_list<const char*> names) {
    for (const char* n : names)
      if (targets(s, n)) return true;
    return false;
  };
  SavedPerToken b;
  b.attention = act * (2 * q + 2 * kv) + m.num_heads * 4;
  b.mlp = act * 2 * f;
  if (s.fused_kernels) {
    b.attention += act * 2 * d + 2 * 4;
    if (!lora || (!dropout && adapted({"q", "k", "v"}))) b.attention += act * d;
    if (!lora || (!dropout && adapted({"gate", "up"}))) b.mlp += act * d;
    if (!lora) b.mlp += act * f;
  } else {
    b.attention += 2 * (4 * d + 4);
    if (!lora) b.attention += 2 * act * d + act * d, b.mlp += act * d + act * f;  // norm outputs, linear inputs
  }
  if (lora)
    for (const auto& [name, width, in_mlp] : adapter_inputs(m))
      if (targets(s, name))
        (in_mlp ? b.mlp : b.attention) += s.fused_kernels ? s.lora_r * act + (dropout ? width * (act + 1) : 0)
                                                          : 4 * s.lora_r + width * (dropout ? 5 : 4);
  return b;
}

// What one layer's backward holds beyond the saved tensors, per token: the gradients of the residual stream (2 x
// hidden) throughout, then in turn those of the MLP (down_proj's input, gate and up: 3 x ffn) and of attention (q, k
// and v, the gradient of its output, q wide, and the flash kernels' fp32 accumulator of dq), in the compute dtype.
// The two halves do not overlap: the larger one counts. Untiled the MLP's is the larger at every Llama shape; with
// the MLP tiled attention's decides at long sequences (Llama-3-8B QLoRA, one sequence, offloaded, tiled at 8192:
// measured 22.1 GiB at 131,072 tokens and 38.21 at 262,144, where the plan said 18.7 and 30.3 without attention's
// gradients, and 22.0 and 38.2 with them).
struct BackwardPerToken {
  std::int64_t residual = 0, mlp = 0, attention = 0;
};

BackwardPerToken backward_bytes_per_token(const LlamaConfig& m, const TrainSetup& s) {
  const std::int64_t act = s.on_gpu ? 2 : 4;
  const std::int64_t q = q_width(m), kv = kv_width(m);
  return {act * 2 * m.hidden_size, act * 3 * m.intermediate_size, act * (2 * q + 2 * kv) + 4 * q};
}

struct Precision {
  std::int64_t weight;   // bytes per stored weight
  std::int64_t trained;  // bytes per trained parameter for grad + master + moments
};

Precision precision(const TrainSetup& s) {
  // GPU: bf16 weight, bf16 grad, fp32 master, 2 fp32 moments. CPU: fp32 weight and grad, 2 fp32 moments.
  return s.on_gpu ? Precision{2, 2 + 4 + 8} : Precision{4, 4 + 8};
}

// out x in of each decoder linear: q, k, v, o, gate, up, down.
std::vector<std::pair<std::int64_t, std::int64_t>> linear_shapes(const LlamaConfig& m) {
  const std::int64_t d = m.hidden_size, q = q_width(m), kv = kv_width(m), f = m.intermediate_size;
  return {{q, d}, {kv, d}, {kv, d}, {d, q}, {f, d}, {f, d}, {d, f}};
}

UnitCost make_unit(std::string name, std::int64_t params, const TrainSetup& s, std::int64_t trained_params) {
  const Precision p = precision(s);
  UnitCost u;
  u.name = std::move(name);
  u.weight_bytes = params * p.weight;
  u.state_bytes = trained_params * p.trained;
  return u;
}

}  // namespace

TrainSetup train_setup_from(const Config& cfg, bool on_gpu) {
  TrainSetup s;
  s.on_gpu = on_gpu;
  s.lora_r = cfg.lora.r;
  s.lora_targets.clear();
  std::stringstream ss(cfg.lora.target_modules);
  for (std::string t; std::getline(ss, t, ',');)
    if (!t.empty()) s.lora_targets.push_back(t);
  s.lora_dropout = cfg.lora.dropout;
  s.fused_kernels = cfg.train.kernels == "fused";
  s.mlp_chunk_tokens = cfg.train.mlp_chunk_tokens;
  s.activation_checkpointing = cfg.train.activation_checkpointing;
  s.activation_checkpointing_layers = cfg.train.activation_checkpointing_layers;
  s.activation_offload = cfg.train.activation_offload;
  if (cfg.train.activation_offload_host_gib > 0)
    s.offload_host_bytes = offload_host_budget(cfg.train.activation_offload_host_gib, 0, 1);
  s.nf4 = cfg.model.quantize == "nf4";
  s.fp8_matmuls = cfg.train.fp8_matmuls;
  s.micro_batch = cfg.train.micro_batch;
  s.seq_len = cfg.train.seq_len;
  s.fused_loss = fused_loss_on(cfg.train, on_gpu);
  return s;
}

std::int64_t offload_host_budget(double host_gib, std::uint64_t available, int local_ranks) {
  if (host_gib > 0) return static_cast<std::int64_t>(host_gib * static_cast<double>(std::int64_t{1} << 30));
  if (available == std::numeric_limits<std::uint64_t>::max()) return std::numeric_limits<std::int64_t>::max();
  return static_cast<std::int64_t>(0.8 * static_cast<double>(available) / std::max(local_ranks, 1));
}

std::vector<UnitCost> layer_costs(const LlamaConfig& m, const TrainSetup& s) {
  if (m.hidden_size <= 0 || m.num_layers <= 0 || m.num_heads <= 0 || m.num_kv_heads <= 0 || m.head_dim <= 0 ||
      m.vocab_size <= 0)
    throw ConfigError("model shape is incomplete or inconsistent for planning");
  const bool lora = s.lora_r > 0;
  const std::int64_t tokens = s.micro_batch * s.seq_len;
  const std::int64_t chunks = std::clamp<std::int64_t>(s.pipeline_chunks, 1, std::max<std::int64_t>(s.micro_batch, 1));
  const std::int64_t chunk_tokens = (s.micro_batch + chunks - 1) / chunks * s.seq_len;  // the largest micro-batch's
  const std::int64_t act_bytes = s.on_gpu ? 2 : 4;
  const double fwd_bwd = lora ? 4.0 : 6.0;  // frozen weights get no weight-gradient matmul
  std::vector<UnitCost> units;

  // Embedding: trained in full fine-tune, frozen with LoRA. Saves only the token ids.
  const std::int64_t embed_params = llama_embedding_parameter_count(m);
  UnitCost embed = make_unit("embed", embed_params, s, lora ? 0 : embed_params);
  embed.activation_bytes = tokens * 8;
  units.push_back(embed);

  const std::int64_t d = m.hidden_size, q = q_width(m);
  const std::int64_t lp = llama_layer_parameter_count(m);
  const std::int64_t adapters = lora_params(m, s);
  // train.mlp_chunk_tokens (a GPU): the MLP keeps only its input (hidden wide) for the whole micro-step; what it would
  // keep, and its backward's gradients, exist for one slice of `slice` rows at a time.
  const SavedPerToken saved = saved_bytes_per_token(m, s);
  const BackwardPerToken back = backward_bytes_per_token(m, s);
  const std::int64_t slice = s.mlp_chunk_tokens > 0 ? std::min(s.mlp_chunk_tokens, chunk_tokens) : chunk_tokens;
  const bool tiled = s.on_gpu && slice < chunk_tokens;
  const std::int64_t saved_per_token = tiled ? saved.attention + act_bytes * d : saved.attention + saved.mlp;
  const std::int64_t slice_bytes = tiled ? slice * (saved.mlp + back.mlp) : 0;
  // NF4: the linears' weights in 4 bits, the rest of the layer (norms, biases) as stored for compute; each linear is
  // dequantized to the compute dtype for its matmuls and freed, so one of the largest is alive at a time.
  const bool nf4 = s.nf4 || m.bnb_nf4;
  std::int64_t nf4_bytes = 0, linear_params = 0, largest_linear = 0, largest_fp8 = 0;
  for (const auto& [out, in] : linear_shapes(m)) {
    nf4_bytes += nf4_base_bytes(out, in);
    linear_params += out * in;
    largest_linear = std::max(largest_linear, out * in);
    // FP8: the weight's e4m3 copy and fp32 scales with the e4m3 input (forward) or output gradient (backward).
    largest_fp8 = std::max(largest_fp8, out * in + 4 * std::max(out, in) + chunk_tokens * (std::max(out, in) + 4));
  }
  std::int64_t offloaded = 0;  // host bytes of the inputs offloaded so far, in forward order
  for (std::int64_t i = 0; i < m.num_layers; ++i) {
    UnitCost u = make_unit("layer " + std::to_string(i), lp, s, lora ? 0 : lp);
    if (nf4) u.weight_bytes = nf4_bytes + (lp - linear_params) * precision(s).weight;
    if (lora) u.state_bytes += adapters * (4 + 4 + 8);  // fp32 adapter, its gradient, two moments
    const bool recomputed = s.activation_checkpointing &&
                            activation_checkpointed_layer(i, m.num_layers, s.activation_checkpointing_layers);
    u.activation_bytes = recomputed ? tokens * act_bytes * d : tokens * saved_per_token;
    // On the CPU the host is the device: the offload moves nothing there. An offloaded input pins its power-of-two
    // pieces (pinned_bytes.h); past the host cap an input stays.
    const std::int64_t pinned = pinned_block_bytes(u.activation_bytes);
    const bool offload = recomputed && s.activation_offload && s.on_gpu && pinned <= s.offload_host_bytes - offloaded;
    if (offload) {
      offloaded += pinned;
      u.host_bytes = pinned;
      u.activation_bytes = 0;
    }
    // Checkpointed, its backward recomputes the layer and holds all of that at once (measured on an 8B stage at
    // 16 x 2048 tokens: 6.6 GiB above the plan before this was counted), with the backward's own gradients on top
    // (counted on a GPU, whose per-path saved counts would otherwise fall below the measured peaks).
    if (recomputed) u.working_bytes = chunk_tokens * saved_per_token;
    // Offloaded, the input of the layer whose backward comes next is brought back during this one's (prefetched).
    if (offload) u.working_bytes += chunk_tokens * act_bytes * d;
    if (s.on_gpu)
      u.working_bytes += chunk_tokens * back.residual +
                         std::max(tiled ? slice_bytes : chunk_tokens * back.mlp, chunk_tokens * back.attention);
    if (nf4) u.working_bytes += largest_linear * act_bytes;
    if (s.fp8_matmuls && lora && s.on_gpu) u.working_bytes += largest_fp8;
    u.flops = static_cast<double>(tokens) * (fwd_bwd * static_cast<double>(lp) + 6.0 * adapters +
                                             3.0 * 4.0 * static_cast<double>(s.seq_len) * static_cast<double>(q));
    units.push_back(u);
  }

  // Final norm + lm_head. A tied head reuses the embedding: its weight travels from the embedding's device (the
  // explicit hop), so it is counted here as a replica (weight + gradient) when the two land on different devices.
  const std::int64_t head_params = embed_params;
  const bool tied = m.tie_word_embeddings;
  UnitCost head = make_unit("head", d + (tied ? 0 : head_params), s, lora ? 0 : d + (tied ? 0 : head_params));
  if (tied) head.weight_bytes += head_params * precision(s).weight * (lora ? 1 : 2);
  if (s.fused_loss) {
    // The fused linear cross-entropy computes the gradients in the forward pass, chunk by chunk: it keeps the head
    // input's gradient in the compute dtype next to the norm's saved input, and a trained head's fp32 weight gradient
    // for each pipeline micro-batch until its backward; a chunk's fp32 logits (the budget), their compute-dtype copy
    // and gradient (half of it each) are the working set. Measured on one H200, Llama-3-8B shape, LoRA r=16, 2 x 2048
    // tokens, activation checkpointing: peak 17.43 GiB (bf16 base), 7.90 GiB (NF4); the unfused head's terms below
    // planned 22.5 and 12.8 GiB.
    head.activation_bytes = tokens * d * act_bytes * 2 + (lora ? 0 : chunks * head_params * 4);
    head.working_bytes = 2 * s.loss_chunk_bytes;
  } else {
    // The loss saves its fp32 log-softmax output ([tokens, vocab], every pipeline micro-batch's until its backward),
    // and its backward holds two more fp32 buffers of one micro-batch (that output's gradient, the fp32 logits'
    // gradient); the compute-precision logits are not kept. Counting only logits + log-softmax (6 bytes in bf16)
    // under-predicted an 8B head's GPU by 24 GiB at 16 x 2048 tokens, m = 1 (two H200s).
    head.activation_bytes = tokens * (m.vocab_size * 4 + d * act_bytes);
    head.working_bytes = chunk_tokens * m.vocab_size * 2 * 4;
  }
  head.flops = static_cast<double>(tokens) * (lora ? 4.0 : 6.0) * static_cast<double>(head_params);
  units.push_back(head);
  return units;
}

std::int64_t nf4_base_bytes(std::int64_t out_features, std::int64_t in_features) {
  const std::int64_t n = out_features * in_features;
  const std::int64_t blocks = (n + 63) / 64;
  return (n + 1) / 2 + blocks + (blocks + 255) / 256 * 4 + (16 + 256) * 4;
}

std::int64_t stage_peak_bytes(const std::vector<UnitCost>& units, int first, int end) {
  std::int64_t sum = 0, working = 0;
  for (int i = first; i < end; ++i) sum += units[i].bytes(), working = std::max(working, units[i].working_bytes);
  return sum + working;
}

std::int64_t training_footprint_bytes(const LlamaConfig& model, const TrainSetup& setup) {
  const auto units = layer_costs(model, setup);
  std::int64_t total = stage_peak_bytes(units, 0, static_cast<int>(units.size()));
  if (model.tie_word_embeddings) {  // on one device the tied head needs no replica
    const std::int64_t replica = llama_embedding_parameter_count(model) * precision(setup).weight *
                                 (setup.lora_r > 0 ? 1 : 2);
    total -= replica;
  }
  return total;
}

}  // namespace ranktune
