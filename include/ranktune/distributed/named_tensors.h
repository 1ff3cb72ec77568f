// defines: NamedTensors, parameters or optimizer state by name in registration order (what named_parameters() gives).
// DDP's gradient synchronisation (distributed/) and the optimizer, checkpoints and replica check (train/) all take it;
// it lives here, the lowest layer that uses it, because core/ stays free of LibTorch.
#pragma once

#include <ATen/Tensor.h>
#include <torch/ordered_dict.h>

#include <string>

namespace ranktune {

using NamedTensors = torch::OrderedDict<std::string, at::Tensor>;

}  // namespace ranktune
