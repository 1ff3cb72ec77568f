// defines: device_rng_state and set_device_rng_state, the state of a device's default generator, for the layers that
// run a forward twice (activation checkpointing, the tiled MLP) and must draw LoRA dropout's masks the same both times.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

namespace ranktune {

at::Tensor device_rng_state(const at::Device& device);
void set_device_rng_state(const at::Device& device, const at::Tensor& state);

}  // namespace ranktune
