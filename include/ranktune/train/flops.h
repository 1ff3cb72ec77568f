// defines: the FLOP accounting behind MFU: train_flops_per_token (6N + 12·L·a·T, or 4N + 6N_adapters + 12·L·a·T with
// LoRA's frozen base: the PaLM paper's MFU convention, docs/training.md) from the model's LlamaConfig, and mfu()
// against a peak (989 TFLOP/s dense bf16 for H100/H200). Pure: the same numbers go to logs, metrics files and bench/.
#pragma once

#include <cstdint>
#include <optional>

#include "ranktune/model/llama_config.h"

namespace ranktune {

inline constexpr double kH100BF16PeakFlops = 989e12;

// Forward + backward FLOPs per trained token, with N = llama_parameter_count(model) less the token embedding (an
// untied lm_head counts; a tied one counts once, as the head's matmul), L layers, a = num_heads x head_dim (the
// attention width: hidden_size unless config.json sets another head_dim), T = seq_len. Full fine-tune
// (lora_adapter_params empty): 6N + 12·L·a·T. LoRA: 4N + 6·N_adapters + 12·L·a·T (activation gradients through the
// frozen weights still cost 2N; their weight gradients are skipped).
double train_flops_per_token(const LlamaConfig& model, std::int64_t seq_len,
                             std::optional<std::int64_t> lora_adapter_params = std::nullopt);

// Model FLOPs utilisation: achieved FLOP/s over `devices` times the per-device peak. 0 when the peak is not positive.
double mfu(double tokens_per_second, double flops_per_token, int devices, double peak_flops = kH100BF16PeakFlops);

}  // namespace ranktune
