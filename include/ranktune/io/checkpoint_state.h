// defines: CheckpointState, what one rank writes into its checkpoint file and gets back on resume: named tensors,
// string and integer attributes, and opaque byte blobs. Generic on purpose: the trainer decides what goes in
// (trainable weights, fp32 masters, optimizer moments, step, tokens seen, sampler cursor, RNG states).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ranktune {

struct CheckpointState {
  // Dotted names become HDF5 groups: "model.layers.0.attn.wq.weight" -> /model/layers/0/attn/wq/weight.
  // Tensors and blobs share this namespace; a name may not also be the prefix of another ("a.b" and "a.b.c").
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::vector<std::uint8_t>> blobs;  // at::Generator::get_state() bytes, serialized cursors
  // Root attributes: the config table, topology, mode, base-model identity; step, tokens seen, sampler cursor.
  std::map<std::string, std::string> strings;
  std::map<std::string, std::int64_t> ints;

  bool empty() const { return tensors.empty() && blobs.empty() && strings.empty() && ints.empty(); }
};

// The bytes of a CPU uint8 tensor (what at::Generator::get_state() returns), and back.
std::vector<std::uint8_t> checkpoint_blob(const at::Tensor& byte_tensor);
at::Tensor checkpoint_blob_tensor(const std::vector<std::uint8_t>& blob);

}  // namespace ranktune
