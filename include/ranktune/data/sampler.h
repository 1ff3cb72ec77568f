// defines: Sampler, which says which dataset rows each rank reads at each optimizer step, and SamplerCursor, its
// resumable state. The global order (a seeded shuffle per epoch) does not depend on the world size: step s covers
// global positions [s*G, (s+1)*G) with G = micro_batch x grad_accum x world_size, and rank r reads the r-th
// contiguous slice of that batch. So 1, 2 or 4 ranks with the same G train on the same rows at every step.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace ranktune {

// Where the sampler is: epoch, and the number of rows of that epoch's order already consumed (a global count,
// independent of the world size). Saved in checkpoints as two integers.
struct SamplerCursor {
  std::int64_t epoch = 0;
  std::int64_t position = 0;
  std::array<std::int64_t, 2> to_ints() const { return {epoch, position}; }
  static SamplerCursor from_ints(const std::array<std::int64_t, 2>& v) { return {v[0], v[1]}; }
  bool operator==(const SamplerCursor&) const = default;
};

struct SamplerOptions {
  std::int64_t num_rows = 0;
  std::int64_t micro_batch = 1;
  std::int64_t grad_accum = 1;
  std::uint64_t seed = 0;
  bool shuffle = true;  // false: rows in file order every epoch (evaluation)
};

class Sampler {
 public:
  // Throws DataError if the dataset holds fewer rows than one global batch (the message has the arithmetic) or
  // ConfigError if rank/world_size/batch sizes are not positive and consistent.
  Sampler(SamplerOptions options, int rank, int world_size);

  std::int64_t global_batch() const { return global_batch_; }
  // Full global batches per epoch; the incomplete tail of an epoch is not used (every step has the same size).
  std::int64_t steps_per_epoch() const { return opt_.num_rows / global_batch_; }

  // This rank's rows for the next optimizer step: grad_accum micro-batches of micro_batch row indices each.
  std::vector<std::vector<std::int64_t>> next_step();

  SamplerCursor cursor() const { return cursor_; }
  // Continues from a saved cursor (possibly saved at another world size with the same global batch).
  // Throws CheckpointError if the cursor cannot belong to this dataset.
  void seek(SamplerCursor c);

  // The row order of one epoch: a permutation of [0, num_rows) from (seed, epoch), or the identity.
  static std::vector<std::int64_t> epoch_order(std::int64_t num_rows, std::uint64_t seed, std::int64_t epoch,
                                               bool shuffle);

 private:
  const std::vector<std::int64_t>& order();

  SamplerOptions opt_;
  int rank_;
  int world_size_;
  std::int64_t global_batch_;
  SamplerCursor cursor_;
  std::int64_t order_epoch_ = -1;
  std::vector<std::int64_t> order_;
};

}  // namespace ranktune
