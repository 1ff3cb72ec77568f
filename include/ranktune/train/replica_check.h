// defines: replica_check, DDP's proof that the replicas are still one model: every rank takes the CRC32C of each
// trainable tensor's raw bytes, the values are all-gathered, and a rank whose parameters differ from rank 0's is an
// error on every rank (the replicas diverged: a bug in the synchronisation, or a hardware fault). The trainer runs it
// at every checkpoint and at the end of a run; the cost is two CRC passes over the bytes (after a host copy on GPU)
// and a gather of 4 bytes per tensor per rank.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "ranktune/distributed/named_tensors.h"

namespace ranktune {

class MpiEnv;

struct ReplicaDigest {
  std::uint32_t crc32c = 0;  // over every tensor's bytes, in registration order
  std::uint64_t bytes = 0;
  std::size_t tensors = 0;
  int ranks = 1;
};

// Collective over env.world(). `params` must list the same names and shapes on every rank (GradSync verified that
// when it was built). Returns the common digest; throws AgreedError (exit 1) on every rank when any rank differs,
// naming the first such rank and its first differing tensor. `step` is for the message.
ReplicaDigest replica_check(const MpiEnv& env, const NamedTensors& params, long step);

// "replicas identical on 2 ranks: crc32c 0x1a2b3c4d over 38 tensors (11.9 MB)"
std::string replica_digest_describe(const ReplicaDigest& d);

}  // namespace ranktune
