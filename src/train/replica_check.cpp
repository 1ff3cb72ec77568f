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

FrozenDigest frozen_digest(const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  FrozenDigest d;
  for (const auto& [name, tensor] : tensors) {
    const at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    d.crcs.emplace_back(name, crc32c(t.data_ptr(), t.nbytes()));
    d.bytes += t.nbytes();
  }
  return d;
}

ReplicaDigest replica_check(const MpiEnv& env, const NamedTensors& params, long step, const FrozenDigest& frozen) {
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
  for (const auto& [name, crc] : frozen.crcs) mine.push_back(crc);
  d.frozen_tensors = frozen.crcs.size();
  d.frozen_bytes = frozen.bytes;

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
  if (first_tensor >= d.tensors) {
    // Made by each rank before training: the ranks started from different bases, whatever the gradients did.
    throw AgreedError(ExitCode::internal,
                      "DDP replicas differ at step " + std::to_string(step) + ": rank " + std::to_string(first_rank) +
                          "'s frozen 4-bit base differs from rank 0's, first at '" +
                          frozen.crcs[first_tensor - d.tensors].first + "' (crc32c " + hex(got) + " vs " + hex(ref) +
                          "); " + std::to_string(differing) + " of " + std::to_string(env.size() - 1) +
                          " other rank(s) differ",
                      "every rank quantizes the same base weights and must get the same bytes: check that rank " +
                          std::to_string(first_rank) +
                          "'s node reads the same model.path files (a different copy or a damaged one) and runs the "
                          "same ranktune build",
                      first_rank);
  }
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
  std::string out = s;
  if (d.frozen_tensors > 0) {
    std::snprintf(s, sizeof s, "; frozen 4-bit base: %zu tensors (%.1f MB) identical", d.frozen_tensors,
                  static_cast<double>(d.frozen_bytes) / 1e6);
    out += s;
  }
  return out;
}

}  // namespace ranktune
