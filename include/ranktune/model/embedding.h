// defines: Embedding, the token embedding table (HF `embed_tokens`, parameter `weight` [vocab, hidden]).
// Ours rather than torch::nn::Embedding so that construction allocates on the target device and dtype without a
// throw-away random init: weights come from a checkpoint or from llama_init_random.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace ranktune {

class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(std::int64_t num_embeddings, std::int64_t dim, const at::TensorOptions& options);
  at::Tensor forward(const at::Tensor& tokens);  // [B, T] int64 -> [B, T, dim]

  at::Tensor weight;
};
TORCH_MODULE(Embedding);

}  // namespace ranktune
