#include "ranktune/train/flops.h"

namespace ranktune {

double train_flops_per_token(const LlamaConfig& model, std::int64_t seq_len,
                             std::optional<std::int64_t> lora_adapter_params) {
  // N: every weight but the token embedding; a tied lm_head is that same matrix, counted once for the head's matmul.
  const std::int64_t embed = llama_embedding_parameter_count(model);
  const double n = static_cast<double>(llama_parameter_count(model) - embed + (model.tie_word_embeddings ? embed : 0));
  const double attention = 12.0 * static_cast<double>(model.num_layers) *
                           static_cast<double>(model.num_heads * model.head_dim) * static_cast<double>(seq_len);
  if (!lora_adapter_params) return 6.0 * n + attention;
  return 4.0 * n + 6.0 * static_cast<double>(*lora_adapter_params) + attention;
}

double mfu(double tokens_per_second, double flops_per_token, int devices, double peak_flops) {
  if (peak_flops <= 0 || devices <= 0) return 0;
  return tokens_per_second * flops_per_token / (peak_flops * devices);
}

}  // namespace ranktune
