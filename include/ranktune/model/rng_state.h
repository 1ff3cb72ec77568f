// defines: device_rng_state and set_device_rng_state, the state of a device's default generator, and DeviceRngReplay,
// for the layers that run a forward twice (activation checkpointing, the tiled MLP) and must draw LoRA dropout's masks
// the same both times.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

namespace ranktune {

at::Tensor device_rng_state(const at::Device& device);
void set_device_rng_state(const at::Device& device, const at::Tensor& state);

// For its lifetime the device's generator replays `saved` (a state taken before the first pass); the state it had is
// put back at the end. An undefined `saved` (nothing drew random numbers) leaves the generator alone.
class DeviceRngReplay {
 public:
  DeviceRngReplay(const at::Device& device, const at::Tensor& saved);
  ~DeviceRngReplay();
  DeviceRngReplay(const DeviceRngReplay&) = delete;
  DeviceRngReplay& operator=(const DeviceRngReplay&) = delete;

 private:
  at::Device device_;
  at::Tensor current_;
};

}  // namespace ranktune
