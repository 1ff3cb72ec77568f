// defines: tiled_mlp, the MLP block over a long sequence in slices of rows (train.mlp_chunk_tokens). The MLP is
// token-wise, so each slice of rows is the same computation as the whole; what changes is memory: its
// intermediate_size-wide tensors (gate, up, their product, and in backward their gradients: 5 of them, the largest
// activations of a layer) exist for one slice at a time instead of the whole sequence. Forward keeps only the MLP's
// input; backward recomputes each slice with gradients on and back-propagates it (re-entrant, as activation
// checkpointing does), summing the parameter gradients over slices and returning them once, so gradient hooks (DDP)
// fire once per step as without tiling. LoRA dropout draws the same masks in the recomputation (the device's RNG state
// is saved before the forward). Costs one more MLP forward per step (none extra under activation checkpointing, whose
// recomputation is this forward). What Unsloth calls TiledMLP and Arctic Long Sequence Training "sequence tiling".
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace ranktune {

class MlpImpl;

// Same value as mlp.forward_untiled(x) (x [..., hidden]), computed `rows` rows of x's flattened leading dimensions at
// a time (with LoRA dropout in training, each slice draws its own masks); with gradients off, a plain loop over slices.
at::Tensor tiled_mlp(MlpImpl& mlp, const at::Tensor& x, std::int64_t rows);

}  // namespace ranktune
