// Replica comparison by checksum: a byte-exact check, because DDP's contract is that every rank applies the same
// averaged gradient to the same weights, so the replicas must agree bit for bit, not within a tolerance.
#include "ranktune/train/replica_check.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <vector>

#include "ranktune/distributed/agree.h"
#include "ranktune/distributed/host_collectives.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/io/crc32c.h"

namespace ranktune {
namespace {

std::string hex(std::uint32_t v) {
  char s[16];
  std::snprintf(s, sizeof s, "0x%08x", v);
  return s;
}

}  // namespace

ReplicaDigest replica_check(const MpiEnv& env, const NamedTensors& params, long step) {
  ReplicaDigest d;
  d.ranks = env.size();
  std::vector<std::uint64_t> mine;  // one CRC per tensor, so a mismatch can name the tensor
  mine.reserve(params.size());
  for (const auto& item : params) {
    // A GPU tensor is copied to the host first; contiguous() because the CRC reads the storage in order.
    const at::Tensor t = item.value().detach().to(at::kCPU).contiguous();
    const std::size_t n = t.nbytes();
    mine.push_back(crc32c(t.data_ptr(), n));
    d.crc32c = crc32c(t.data_ptr(), n, d.crc32c);
    d.bytes += n;
  }
  d.tensors = mine.size();

  const std::vector<std::vector<std::uint64_t>> all = host::all_gather(env, mine);
  for (const auto& theirs : all)  // every rank sees a count that differs from its own, so all of them throw
    if (theirs.size() != mine.size()) throw CommError("replica check: the ranks hold different numbers of tensors");

  // Every rank holds the same table, so every rank reaches the same verdict and throws the same error: no rank is
  // left waiting in a collective, and main prints it once.
  int differing = 0, first_rank = -1;
  std::size_t first_tensor = 0;
  for (int r = 1; r < env.size(); ++r) {
    const std::vector<std::uint64_t>& theirs = all[static_cast<std::size_t>(r)];
    for (std::size_t i = 0; i < mine.size(); ++i)
      if (theirs[i] != all[0][i]) {
        if (first_rank < 0) {
          first_rank = r;
          first_tensor = i;
        }
        ++differing;
        break;
      }
  }
  if (first_rank < 0) return d;
  const auto ref = static_cast<std::uint32_t>(all[0][first_tensor]);
  const auto got = static_cast<std::uint32_t>(all[static_cast<std::size_t>(first_rank)][first_tensor]);
  throw AgreedError(ExitCode::internal,
                    "DDP replicas diverged at step " + std::to_string(step) + ": rank " + std::to_string(first_rank) +
                        "'s trainable parameters differ from rank 0's, first at '" + params[first_tensor].key() +
                        "' (crc32c " + hex(got) + " vs " + hex(ref) + "); " + std::to_string(differing) + " of " +
                        std::to_string(env.size() - 1) + " other rank(s) differ",
                    "every rank applies the same averaged gradient to the same weights, so this is a bug in the "
                    "gradient synchronisation or a hardware fault on rank " +
                        std::to_string(first_rank) +
                        "'s node (check its GPU for ECC/Xid errors); resume from the last checkpoint",
                    first_rank);
}

std::string replica_digest_describe(const ReplicaDigest& d) {
  char s[160];
  std::snprintf(s, sizeof s, "replicas identical on %d ranks: crc32c %s over %zu tensors (%.1f MB)", d.ranks,
                hex(d.crc32c).c_str(), d.tensors, static_cast<double>(d.bytes) / 1e6);
  return s;
}

}  // namespace ranktune
