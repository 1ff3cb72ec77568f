#include "ranktune/model/rng_state.h"

#include <ATen/Context.h>

#include <mutex>

namespace ranktune {

at::Tensor device_rng_state(const at::Device& device) {
  at::Generator gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_device_rng_state(const at::Device& device, const at::Tensor& state) {
  at::Generator gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

DeviceRngReplay::DeviceRngReplay(const at::Device& device, const at::Tensor& saved) : device_(device) {
  if (!saved.defined()) return;
  current_ = device_rng_state(device);
  set_device_rng_state(device, saved);
}

DeviceRngReplay::~DeviceRngReplay() {
  if (current_.defined()) set_device_rng_state(device_, current_);
}

}  // namespace ranktune
