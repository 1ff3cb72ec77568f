// defines: Nf4Weight (a weight in bitsandbytes' 4-bit NF4 format with double-quantized absmaxes, field for field what
// transformers saves for "...-bnb-4bit" checkpoints), nf4_quantize (byte for byte what bitsandbytes 0.50's
// quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True) gives on CPU) and nf4_dequantize (bit for
// bit its dequantize_4bit: a CUDA kernel on a GPU, a threaded loop on the CPU). The frozen base of QLoRA is held this
// way so that checkpoints made by bitsandbytes load as they are and ours load in bitsandbytes.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ranktune {

inline constexpr std::int64_t kNf4BlockSize = 64;         // weights per absmax
inline constexpr std::int64_t kNf4NestedBlockSize = 256;  // absmaxes per nested absmax

// Blocks run over the flattened weight (row-major), so a block may span rows; a last partial block and, for an odd
// element count, a zero padding nibble are bitsandbytes' behaviour and kept.
struct Nf4Weight {
  at::Tensor packed;                     // uint8 [(numel + 1) / 2, 1]: two codes a byte, the earlier element high
  at::Tensor absmax;                     // uint8 [blocks]: block absmax minus offset, in nested_quant_map's 8-bit code
  at::Tensor quant_map;                  // float32 [16]: the NF4 code
  at::Tensor nested_absmax;              // float32 [ceil(blocks / 256)]
  at::Tensor nested_quant_map;           // float32 [256]: bitsandbytes' signed dynamic map
  float offset = 0;                      // mean of the block absmaxes ("nested_offset")
  std::vector<std::int64_t> shape;       // of the weight
  at::ScalarType dtype = at::kBFloat16;  // of the weight: what dequantization returns

  std::int64_t numel() const;
  std::int64_t blocks() const { return (numel() + kNf4BlockSize - 1) / kNf4BlockSize; }
  Nf4Weight to(at::Device device) const;
};

// Quantizes a bf16/fp16/fp32 weight of any shape on its own device; the double quantization of the absmaxes runs on
// the CPU (its mean, a float32 torch reduction, is bnb's: beyond 32768 blocks its last bit follows torch's thread
// count, in bnb as here). Refuses an empty weight, another dtype, or NaN/Inf values. On the CPU one threaded pass over
// the weight; elsewhere nf4_quantize_reference.
Nf4Weight nf4_quantize(const at::Tensor& weight);

// The same result from bnb's backend op for op in ATen (abs/amax, reciprocal, clamp, bucketize, shifts), on the
// weight's device: what runs on a GPU, and the plain reference the CPU pass is tested against.
Nf4Weight nf4_quantize_reference(const at::Tensor& weight);

// The weight back in `w.dtype` (or `dtype`: bf16, fp16 or fp32), shaped `w.shape`, on `w.packed`'s device.
at::Tensor nf4_dequantize(const Nf4Weight& w);
at::Tensor nf4_dequantize(const Nf4Weight& w, at::ScalarType dtype);

// The same from bnb's default backend op for op in ATen (unpack, index the code, times the block absmax, cast), on the
// weight's device: the plain reference the CPU loop (and through it the CUDA kernel) is tested against.
at::Tensor nf4_dequantize_reference(const Nf4Weight& w, at::ScalarType dtype);

// float32 [blocks]: the absmax each block is scaled by (nested code * nested absmax + offset): dequantization's first
// stage.
at::Tensor nf4_block_absmax(const Nf4Weight& w);

// Checks that the tensors' dtypes, sizes and devices fit `shape`, as a loader must before trusting a file. Throws
// LibraryError naming the field.
void nf4_check(const Nf4Weight& w);

// The tensors under the names transformers gives a Linear4bit's weight: prefix + "weight", "weight.absmax",
// "weight.quant_map", "weight.nested_absmax", "weight.nested_quant_map", "weight.quant_state.bitsandbytes__nf4".
std::vector<std::pair<std::string, at::Tensor>> nf4_state_dict(const Nf4Weight& w, const std::string& prefix);

// The JSON that "weight.quant_state.bitsandbytes__nf4" holds as bytes, formatted as bitsandbytes writes it (Python's
// json.dumps), so that a saved state is byte-identical to theirs.
std::string nf4_quant_state_json(const Nf4Weight& w);

// The code tables (CPU float32): the 16 NF4 values and bitsandbytes' 256-value signed dynamic map.
at::Tensor nf4_code();
at::Tensor nf4_dynamic_map();

}  // namespace ranktune
