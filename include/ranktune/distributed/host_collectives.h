// defines: host collectives, the one place where ranks agree on host values (strings, integers, outcomes) over MPI.
// Every layer above distributed/ meets other ranks through these functions or a Communicator; no <mpi.h> and no
// MPI_ call outside distributed/ (tests/layering.sh checks it). Each call is collective over `env.world()` unless
// it takes `node`, which means the node-local communicator.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ranktune {

class MpiEnv;

namespace host {

// Which communicator a collective runs on.
enum class Scope { world, node };

// Rank `root`'s string on every rank.
void broadcast(const MpiEnv& env, std::string& s, int root = 0);
// Rank `root`'s integers on every rank (the vector is resized to root's size).
void broadcast(const MpiEnv& env, std::vector<std::int64_t>& values, int root = 0);
void broadcast(const MpiEnv& env, std::int64_t& value, int root = 0);

std::int64_t sum(const MpiEnv& env, std::int64_t value, Scope scope = Scope::world);
double sum(const MpiEnv& env, double value, Scope scope = Scope::world);
// Element-wise sum, in place.
void sum(const MpiEnv& env, std::vector<double>& values, Scope scope = Scope::world);
std::int64_t max(const MpiEnv& env, std::int64_t value, Scope scope = Scope::world);
std::int64_t min(const MpiEnv& env, std::int64_t value, Scope scope = Scope::world);
bool any(const MpiEnv& env, bool value, Scope scope = Scope::world);

// Every rank's value, in rank order (of the scope's communicator).
std::vector<std::uint64_t> all_gather(const MpiEnv& env, std::uint64_t value, Scope scope = Scope::world);
std::vector<std::string> all_gather(const MpiEnv& env, const std::string& value, Scope scope = Scope::world);
// Every rank's values on every rank, in rank order; each rank may send a different count.
std::vector<std::vector<std::uint64_t>> all_gather(const MpiEnv& env, const std::vector<std::uint64_t>& values,
                                                   Scope scope = Scope::world);
// Every rank's values on `root` only (empty elsewhere); each rank may send a different count.
std::vector<std::vector<std::uint64_t>> gather(const MpiEnv& env, const std::vector<std::uint64_t>& values,
                                               int root = 0);

// Every rank's bytes on `root` only (empty elsewhere), in rank order; any size: large payloads go in rounds of at
// most `chunk` bytes per rank (0: as many as one MPI count allows), so no count overflows. Collective: a root that
// cannot hold the parts throws OutOfMemoryError on every rank, before any data moves.
std::vector<std::string> gather_bytes(const MpiEnv& env, const std::string& bytes, int root = 0, std::size_t chunk = 0);

void barrier(const MpiEnv& env, Scope scope = Scope::world);

// The worst outcome across ranks: the highest `code` (0 = fine) and the message of the first rank that has it.
struct Outcome {
  int code = 0;
  std::string message;
  int rank = -1;  // the first rank with the worst code; -1 when every code is 0
};
Outcome worst(const MpiEnv& env, int code, const std::string& message);

}  // namespace host
}  // namespace ranktune
