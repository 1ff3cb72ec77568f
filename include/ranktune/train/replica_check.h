// defines: replica_check, DDP's proof that the replicas are still one model: every rank takes the CRC32C of each
// trainable tensor's raw bytes (and, once, of the frozen 4-bit base's: frozen_digest), the values are all-gathered,
// and a rank whose tensors differ from rank 0's is an error on every rank (diverged replicas: a synchronisation bug or
// a hardware fault). Run at every checkpoint and at the end of a run; the cost is two CRC passes over the bytes (after
// a host copy on GPU) and a gather of 4 bytes per tensor per rank.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ranktune/distributed/named_tensors.h"

namespace ranktune {

class MpiEnv;

struct ReplicaDigest {
  std::uint32_t crc32c = 0;  // over every tensor's bytes, in registration order
  std::uint64_t bytes = 0;
  std::size_t tensors = 0;
  int ranks = 1;
  std::size_t frozen_tensors = 0;  // FrozenDigest's, compared too (not in crc32c)
  std::uint64_t frozen_bytes = 0;
};

// Frozen tensors that every rank made for itself and must hold identically: QLoRA's NF4 base (each rank quantizes
// its own copy, model/quantize.h's llama_nf4_state). Their CRC32Cs are taken once, since they never change, and each
// replica check compares them after the trainable tensors'.
struct FrozenDigest {
  std::vector<std::pair<std::string, std::uint32_t>> crcs;  // per tensor, in the given order
  std::uint64_t bytes = 0;
};
FrozenDigest frozen_digest(const std::vector<std::pair<std::string, at::Tensor>>& tensors);

// Collective over env.world(). `params` (and `frozen`) must list the same names and shapes on every rank (GradSync
// verified that when it was built). Returns the common digest; throws AgreedError (exit 1) on every rank when any
// rank differs, naming the first such rank and its first differing tensor. `step` is for the message.
ReplicaDigest replica_check(const MpiEnv& env, const NamedTensors& params, long step, const FrozenDigest& frozen = {});

// "replicas identical on 2 ranks: crc32c 0x1a2b3c4d over 38 tensors (11.9 MB)", plus "; frozen 4-bit base: 84 tensors
// (1.2 MB) identical" when frozen tensors were compared.
std::string replica_digest_describe(const ReplicaDigest& d);

}  // namespace ranktune
