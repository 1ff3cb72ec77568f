#include "ranktune/model/embedding.h"

#include <ATen/ATen.h>

namespace ranktune {

EmbeddingImpl::EmbeddingImpl(std::int64_t num_embeddings, std::int64_t dim, const at::TensorOptions& options) {
  weight = register_parameter("weight", at::empty({num_embeddings, dim}, options));
}

at::Tensor EmbeddingImpl::forward(const at::Tensor& tokens) { return at::embedding(weight, tokens); }

}  // namespace ranktune
