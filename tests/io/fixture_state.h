// The deterministic checkpoint content shared by the MPI tests, the 2-rank fixture and check_h5py.py (which
// rebuilds the same values with torch): rank 0 holds tensors of every dtype, every rank an RNG blob and a cursor.
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstring>

#include <string>

#include "ranktune/io/checkpoint_state.h"

namespace ranktune::test {

inline const std::vector<at::ScalarType>& fixture_dtypes() {
  static const std::vector<at::ScalarType> d = {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16, at::kChar,
                                                at::kShort, at::kInt,    at::kLong, at::kByte,     at::kBool};
  return d;
}

// check_h5py.py: base = arange(105, float64); floats: base * 0.37 - 19; integers: (base * 7) % 251 - 125
// (uint8: without the -125); bool: base % 3 == 0; all reshaped to [3, 5, 7].
inline at::Tensor fixture_tensor(at::ScalarType dt) {
  const at::Tensor base = at::arange(105, at::kDouble);
  at::Tensor t;
  if (dt == at::kBool) t = at::fmod(base, 3).eq(0);
  else if (at::isFloatingType(dt)) t = (base * 0.37 - 19).to(dt);
  else if (dt == at::kByte) t = at::fmod(base * 7, 251).to(dt);
  else t = (at::fmod(base * 7, 251) - 125).to(dt);
  return t.reshape({3, 5, 7});
}

inline CheckpointState fixture_state(int rank, long step) {
  CheckpointState s;
  at::Generator gen = at::detail::createCPUGenerator(static_cast<std::uint64_t>(1000 + rank));
  s.blobs["rng.cpu"] = checkpoint_blob(gen.get_state());
  s.ints["data.cursor"] = 1000 + rank;
  s.ints["optimizer_step"] = step;
  if (rank != 0) return s;
  for (auto dt : fixture_dtypes()) s.tensors[std::string("dtypes.") + at::toString(dt)] = fixture_tensor(dt);
  s.tensors["special.bf16_all_bits"] =
      at::arange(65536, at::kInt).to(at::kShort).view(at::kBFloat16).reshape({256, 256});
  s.tensors["model.layers.0.attn.wq.weight"] =
      (at::arange(64 * 48, at::kDouble).reshape({64, 48}) / 97).sin().to(at::kBFloat16);
  s.tensors["optim.exp_avg.model.layers.0.attn.wq.weight"] = at::full({64, 48}, 0.125, at::kFloat);
  s.tensors["scalar"] = at::scalar_tensor(2.5, at::kFloat);
  s.strings["config"] = "[train]\nlr = 0.001\nnote = Grüße ☃\n";
  s.strings["note"] = "ddp";
  s.ints["tokens_seen"] = 123456789012LL;
  return s;
}

// True when a and b hold the same names with bitwise-equal values.
inline bool states_equal(const CheckpointState& a, const CheckpointState& b, std::string* why = nullptr) {
  auto fail = [&](const std::string& w) {
    if (why) *why = w;
    return false;
  };
  if (a.strings != b.strings) return fail("strings differ");
  if (a.ints != b.ints) return fail("ints differ");
  if (a.blobs != b.blobs) return fail("blobs differ");
  if (a.tensors.size() != b.tensors.size()) return fail("tensor count differs");
  for (const auto& [name, t] : a.tensors) {
    auto it = b.tensors.find(name);
    if (it == b.tensors.end()) return fail("missing tensor " + name);
    const at::Tensor x = t.contiguous(), y = it->second.contiguous();
    if (x.scalar_type() != y.scalar_type() || x.sizes() != y.sizes() ||
        std::memcmp(x.data_ptr(), y.data_ptr(), static_cast<std::size_t>(x.numel() * x.element_size())) != 0)
      return fail("tensor " + name + " differs");
  }
  return true;
}

}  // namespace ranktune::test
