// defines: TrainSetup, UnitCost and layer_costs, the per-unit memory and compute model that the balanced planner
// partitions. A unit is the embedding, one decoder layer, or the final norm + lm_head. Pure arithmetic from the
// model's LlamaConfig (head_dim and biases as the model has them; parameters from llama_parameter_count's parts) and
// the training setup: no LibTorch, CUDA or MPI, so it is unit-tested anywhere.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "ranktune/core/config.h"
#include "ranktune/model/llama_config.h"

namespace ranktune {

struct TrainSetup {
  bool on_gpu = true;  // bf16 weights with fp32 masters on GPU; fp32 everywhere on CPU
  int lora_r = 0;      // 0 = full fine-tune
  std::vector<std::string> lora_targets{"q", "k", "v", "o", "gate", "up", "down"};
  double lora_dropout = 0;  // > 0: each adapter keeps its own dropped input and mask
  bool activation_checkpointing = false;
  // train.activation_checkpointing_layers: only this many layers recompute (core/activation_checkpointing_layers.h);
  // the others keep their saved activations as without checkpointing. 0 = every layer.
  std::int64_t activation_checkpointing_layers = 0;
  // train.kernels=fused: on a GPU, the fused RMSNorm, RoPE, SwiGLU and LoRA ops, which keep far fewer activations than
  // the eager reference ops (saved_bytes_per_token in layer_cost.cpp).
  bool fused_kernels = true;
  // train.mlp_chunk_tokens: on a GPU, the MLP's intermediate-wide tensors exist for this many tokens at a time
  // (model/tiled_mlp.h); 0 = the whole micro-step.
  std::int64_t mlp_chunk_tokens = 0;
  // train.activation_offload (with checkpointing): each layer's saved input waits in pinned host memory, not on the
  // device; the recomputation's working set stays on the device. At most offload_host_bytes of inputs go to the host
  // (the first layers' in forward order, as the model does: model/activation_checkpoint.h's OffloadBudget); the rest
  // stay on the device.
  bool activation_offload = false;
  std::int64_t offload_host_bytes = std::numeric_limits<std::int64_t>::max();
  // model.quantize=nf4 (QLoRA): the decoder linears held in bitsandbytes' 4-bit NF4 (nf4_base_bytes) and dequantized
  // to the compute dtype one at a time; a bnb-4bit model directory (LlamaConfig::bnb_nf4) implies it.
  bool nf4 = false;
  // train.fp8_matmuls (LoRA, a GPU): each adapted linear's frozen weight is quantized to e4m3 in each call (a byte a
  // weight, by rows forward and by columns backward) with its input or output gradient (a byte an element): one
  // linear's copies are the working set.
  bool fp8_matmuls = false;
  std::int64_t micro_batch = 1;  // sequences per optimizer micro-step (all pipeline micro-batches together)
  std::int64_t seq_len = 2048;
  // Balanced mode's pipeline micro-batches (GPipe): every micro-batch's saved activations are alive at once, but the
  // working sets of a backward (a recomputed layer, the loss's buffers) are one micro-batch's. plan_balanced_for sets
  // it from its micro_batches; elsewhere (one device, no pipeline) it stays 1.
  int pipeline_chunks = 1;
  // train.fused_loss in effect (fused_loss_on): the head keeps no [tokens, vocab] logits, only the gradient of its
  // input (and, training the head, its fp32 weight gradient per pipeline micro-batch); one chunk of logits of at most
  // loss_chunk_bytes in fp32 (model/linear_cross_entropy.h's kLinearCrossEntropyChunkBytes) is alive at a time.
  bool fused_loss = false;
  std::int64_t loss_chunk_bytes = std::int64_t{256} << 20;
};
TrainSetup train_setup_from(const Config& cfg, bool on_gpu);

// The cap on a rank's offloaded layer inputs: train.activation_offload_host_gib when set (> 0), else 80% of the host
// memory `available` (host_memory_available's figure; UINT64_MAX: unknown, no cap) shared among `local_ranks`.
std::int64_t offload_host_budget(double host_gib, std::uint64_t available, int local_ranks);

struct UnitCost {
  std::string name;                   // "embed", "layer 7", "head"
  std::int64_t weight_bytes = 0;      // parameters as stored for compute
  std::int64_t state_bytes = 0;       // gradients, fp32 masters, optimizer moments, LoRA adapters and their state
  std::int64_t activation_bytes = 0;  // saved for backward, for the whole micro-step
  double flops = 0;                   // forward + backward per micro-step
  // Held only while this unit runs its backward (with activation checkpointing: the layer's recomputed activations);
  // a stage needs the largest of its units' working bytes on top of the sum of their bytes().
  std::int64_t working_bytes = 0;
  std::int64_t host_bytes = 0;  // pinned host memory for the micro-step (activation offload); not in bytes()
  std::int64_t bytes() const { return weight_bytes + state_bytes + activation_bytes; }
};

// Bytes of one out x in linear weight in NF4 with double quantization: packed codes (two a byte), one 8-bit absmax per
// 64 weights, one fp32 absmax per 256 of those, the 16-entry NF4 and 256-entry dynamic fp32 code tables.
std::int64_t nf4_base_bytes(std::int64_t out_features, std::int64_t in_features);

// Bytes a stage holding units [first, end) needs at its peak: their bytes() plus the largest working_bytes.
std::int64_t stage_peak_bytes(const std::vector<UnitCost>& units, int first, int end);

// Throws ConfigError when the shape has a non-positive size (a LlamaConfig that llama_config_validate passed has none).
std::vector<UnitCost> layer_costs(const LlamaConfig& model, const TrainSetup& setup);

// The whole training footprint on one device (what `--parallel.mode=auto` compares with free memory).
std::int64_t training_footprint_bytes(const LlamaConfig& model, const TrainSetup& setup);

}  // namespace ranktune
