// defines: the 4-bit base of QLoRA at build time (model.quantize=nf4): every decoder linear (q, k, v, o, gate, up, down
// of every layer, LoRA targets or not, as bitsandbytes quantizes them) held as NF4 (kernels/nf4.h, Linear's
// weight_nf4) on the model's device, while embeddings, norms and lm_head stay 16-bit. Models are built, filled and
// quantized one decoder layer at a time, so the 16-bit weights of more than one layer never exist at once.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ranktune/model/block.h"
#include "ranktune/model/llama.h"

namespace ranktune {

enum class Quantize { none, nf4 };

// "none" or "nf4" (model.quantize); ConfigError naming the value otherwise.
Quantize quantize_parse(const std::string& name);

// The seven linears of a decoder layer as NF4 (each quantized from its 16-bit weight, which is freed). With `from`
// set, each weight is first rounded to that dtype: the bytes a run holding the model in `from` made (an fp32 rebuild of
// a bf16 run's base, for export and generate).
void llama_layer_quantize(DecoderBlockImpl& layer, std::optional<at::ScalarType> from = std::nullopt);
// Every decoder layer of a model built in 16 bits: for tests, and what the comparisons quantize.
void llama_quantize(LlamaImpl& model);
bool llama_quantized(const LlamaImpl& model);
// The 16-bit bytes of the decoder linears that NF4 holds in 4 bits (packed codes + double-quantized absmaxes):
// (16-bit size, NF4 size) of `model`'s quantized linears, for the log line that says what the base costs.
std::pair<std::int64_t, std::int64_t> llama_nf4_bytes(const LlamaImpl& model);

// llama_random's model and numbers (the same draws, in the same order), quantized layer by layer when q is nf4.
Llama llama_random_quantized(const LlamaConfig& c, std::uint64_t seed, const at::TensorOptions& options, Quantize q);

// llama_from_pretrained (hf_model_dir.h), quantized layer by layer when q is nf4: a layer's tensors are read from the
// (memory-mapped) safetensors, converted to `options`, quantized on its device and dropped before the next layer is
// allocated. Linear weights already in bitsandbytes' 4-bit format are taken as they are (bnb_checkpoint.h), their six
// tensors from whichever shards hold them. `from`: as llama_layer_quantize's (the 16-bit linears only).
Llama llama_from_pretrained_quantized(const std::string& dir, const at::TensorOptions& options, Quantize q,
                                      std::optional<at::ScalarType> from = std::nullopt);

// The NF4 base's bytes by name, for comparing replicas: per quantized linear its bitsandbytes tensors
// (nf4_state_dict: packed codes, absmax, quant_map, nested absmax and map, quant-state JSON with offset, dtype, shape)
// under "<linear>.weight...". Empty for a 16-bit model.
std::vector<std::pair<std::string, at::Tensor>> llama_nf4_state(const LlamaImpl& model);

}  // namespace ranktune
