// defines: hf_quantization_parse (config.json's "quantization_config": none, or bitsandbytes 4-bit NF4 with double
// quantization, the one pre-quantized format ranktune loads; fp4, 8-bit, GPTQ, AWQ, ... refused by name), and
// nf4_weight_read (one decoder linear of a "...-bnb-4bit" directory read as the Nf4Weight it is, every tensor and the
// quant_state JSON checked first, never dequantized and requantized). Faults are exit 2: a tensor's ModelDirError,
// config.json's ConfigError.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ranktune/kernels/nf4.h"
#include "ranktune/model/safetensors.h"

namespace ranktune {

class HfModelDir;

enum class HfQuantization { none, bnb_nf4 };

// config.json's text (`origin` names it in messages) -> the quantization its weights are stored in. Accepted:
// no "quantization_config" (or null), and quant_method bitsandbytes with load_in_4bit, bnb_4bit_quant_type nf4,
// bnb_4bit_use_double_quant true, uint8 storage, and no llm_int8_skip_modules entry that would leave a decoder
// linear (q/k/v/o/gate/up/down of any layer) unquantized. Anything else throws ConfigError naming the field and value.
HfQuantization hf_quantization_parse(std::string_view config_json, const std::string& origin);

// Whether the model directory's config.json is a bitsandbytes NF4 one (model.quantize=nf4 is then implied). Refuses
// what hf_quantization_parse refuses; a directory without a readable config.json is a ModelDirError.
bool hf_model_dir_is_bnb_nf4(const std::string& dir);

// Reads the six tensors transformers saves for a Linear4bit under `prefix` ("model.layers.0.self_attn.q_proj."):
// weight, weight.absmax, weight.quant_map, weight.nested_absmax, weight.nested_quant_map and the JSON bytes of
// weight.quant_state.bitsandbytes__nf4 (quant_type nf4, blocksize 64, nested_blocksize 256, nested_dtype float32, a
// finite nested_offset, dtype bf16/fp16/fp32, shape). `expected_shape` (the model's [out, in]; empty: not checked)
// must equal the recorded shape. Tensors are copied to `device`. A missing tensor or field, an unsupported value, a
// table that does not fit the shape, or a quant_map that is not the NF4 code is a ModelDirError naming the file, the
// tensor and the field.
Nf4Weight nf4_weight_read(const SafetensorsFile& file, const std::string& prefix, at::Device device,
                          const std::vector<std::int64_t>& expected_shape = {});
// The same over a model directory: in a sharded one the six tensors may sit in different shards (transformers cuts
// shards between any two tensors); messages name the shard of each.
Nf4Weight nf4_weight_read(const HfModelDir& files, const std::string& prefix, at::Device device,
                          const std::vector<std::int64_t>& expected_shape = {});

// The names nf4_weight_read reads under `prefix`, "weight" first: what a directory check expects in place of a 16-bit
// prefix + "weight".
std::vector<std::string> bnb_nf4_tensor_names(const std::string& prefix);

}  // namespace ranktune
