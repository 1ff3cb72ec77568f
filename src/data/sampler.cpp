// Epoch shuffles by Fisher-Yates over SplitMix64 seeded from (seed, epoch); global batch slicing per rank.
#include "ranktune/data/sampler.h"

#include <numeric>
#include <string>

#include "ranktune/data/data_error.h"
#include "ranktune/data/rng.h"

namespace ranktune {

Sampler::Sampler(SamplerOptions options, int rank, int world_size)
    : opt_(options), rank_(rank), world_size_(world_size), global_batch_(0) {
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    throw ConfigError("sampler: rank " + std::to_string(rank) + " is not in a world of " + std::to_string(world_size));
  }
  if (opt_.micro_batch < 1 || opt_.grad_accum < 1) {
    throw ConfigError("train.micro_batch and train.grad_accum must be positive, got " +
                      std::to_string(opt_.micro_batch) + " and " + std::to_string(opt_.grad_accum));
  }
  global_batch_ = opt_.micro_batch * opt_.grad_accum * world_size;
  if (opt_.num_rows < global_batch_) {
    throw DataError("the dataset has " + std::to_string(opt_.num_rows) + " rows, fewer than one global batch of " +
                        std::to_string(global_batch_) + " = micro_batch " + std::to_string(opt_.micro_batch) +
                        " x grad_accum " + std::to_string(opt_.grad_accum) + " x world size " +
                        std::to_string(world_size),
                    "use more data, a shorter seq_len, or a smaller train.micro_batch / train.grad_accum");
  }
}

std::vector<std::int64_t> Sampler::epoch_order(std::int64_t num_rows, std::uint64_t seed, std::int64_t epoch,
                                               bool shuffle) {
  std::vector<std::int64_t> order(static_cast<std::size_t>(num_rows));
  std::iota(order.begin(), order.end(), 0);
  if (!shuffle) return order;
  // Mixing the epoch through one SplitMix64 step keeps (seed, epoch) pairs from sharing a stream.
  SplitMix64 rng(SplitMix64(seed ^ (0xD1B54A32D192ED03ull * static_cast<std::uint64_t>(epoch + 1))).next());
  for (std::size_t i = order.size(); i > 1; --i) {
    std::swap(order[i - 1], order[rng.below(i)]);
  }
  return order;
}

const std::vector<std::int64_t>& Sampler::order() {
  if (order_epoch_ != cursor_.epoch) {
    order_ = epoch_order(opt_.num_rows, opt_.seed, cursor_.epoch, opt_.shuffle);
    order_epoch_ = cursor_.epoch;
  }
  return order_;
}

std::vector<std::vector<std::int64_t>> Sampler::next_step() {
  if (cursor_.position + global_batch_ > opt_.num_rows) {
    ++cursor_.epoch;
    cursor_.position = 0;
  }
  const std::vector<std::int64_t>& ord = order();
  const std::int64_t per_rank = global_batch_ / world_size_;
  std::int64_t p = cursor_.position + rank_ * per_rank;
  std::vector<std::vector<std::int64_t>> micro(static_cast<std::size_t>(opt_.grad_accum));
  for (auto& mb : micro) {
    mb.assign(ord.begin() + p, ord.begin() + p + opt_.micro_batch);
    p += opt_.micro_batch;
  }
  cursor_.position += global_batch_;
  return micro;
}

void Sampler::seek(SamplerCursor c) {
  if (c.epoch < 0 || c.position < 0 || c.position > opt_.num_rows) {
    throw CheckpointError("sampler cursor (epoch " + std::to_string(c.epoch) + ", position " +
                              std::to_string(c.position) + ") does not fit a dataset of " +
                              std::to_string(opt_.num_rows) + " rows",
                          "resume with the dataset the checkpoint was trained on");
  }
  cursor_ = c;
}

}  // namespace ranktune
