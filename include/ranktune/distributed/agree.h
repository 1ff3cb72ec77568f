// defines: agree_run (run a phase on every rank and make all ranks agree on its outcome) and agree_config_hash.
// Errors raised inside a phase come back as AgreedError on every rank, carrying the first failing rank's message
// and exit code: every rank exits with the same code, rank 0 prints it, and nobody waits in a collective.
#pragma once

#include <cstdint>
#include <functional>

#include "ranktune/core/error.h"

namespace ranktune {

class MpiEnv;

class AgreedError : public Error {
 public:
  AgreedError(ExitCode code, const std::string& what, std::string hint, int failing_rank)
      : Error(code, what, std::move(hint)), failing_rank_(failing_rank) {}
  int failing_rank() const noexcept { return failing_rank_; }

 private:
  int failing_rank_;
};

void agree_run(const MpiEnv& env, const std::function<void()>& phase);

// All ranks must run the same effective config: compares the hashes, names the ranks that differ.
void agree_config_hash(const MpiEnv& env, std::uint64_t hash);

}  // namespace ranktune
