// Host collectives over MPI. Sizes travel as int64 ahead of the data so receivers can resize, and every rank checks
// the same sizes against MPI's int counts, so an oversized collective fails on every rank instead of leaving some
// ranks waiting.
#include "ranktune/distributed/host_collectives.h"

#include <algorithm>
#include <limits>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "ranktune/core/error.h"
#include "ranktune/distributed/mpi_check.h"
#include "ranktune/distributed/mpi_env.h"

namespace ranktune::host {
namespace {

MPI_Comm comm_of(const MpiEnv& env, Scope scope) { return scope == Scope::node ? env.local() : env.world(); }

// MPI counts and displacements are int: a larger one is refused, never truncated.
int mpi_count(std::int64_t n, const char* what) {
  if (n < 0 || n > std::numeric_limits<int>::max())
    throw CommError(std::string("host collective: ") + what + " of " + std::to_string(n) +
                    " elements exceeds the MPI count limit of " + std::to_string(std::numeric_limits<int>::max()));
  return static_cast<int>(n);
}

// Root's size on every rank, checked on every rank alike.
int broadcast_count(MPI_Comm comm, std::size_t size, int root, const char* what) {
  std::int64_t n = static_cast<std::int64_t>(size);
  RANKTUNE_MPI_CHECK(MPI_Bcast(&n, 1, MPI_INT64_T, root, comm));
  return mpi_count(n, what);
}

// Every rank's `n` elements at `data`, in rank order: on every rank when `root` is empty, else on `root` only (other
// ranks get an empty result). The counts are exchanged with an all-gather even for a rooted gather, so that every
// rank sees the same total and an overflow throws everywhere.
template <class Part, class T>
std::vector<Part> gather_varying(MPI_Comm comm, const T* data, std::size_t n, MPI_Datatype type,
                                 std::optional<int> root, const char* what) {
  int rank = 0, size = 0;
  RANKTUNE_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  RANKTUNE_MPI_CHECK(MPI_Comm_size(comm, &size));
  const std::int64_t mine = static_cast<std::int64_t>(n);
  std::vector<std::int64_t> counts64(static_cast<std::size_t>(size));
  RANKTUNE_MPI_CHECK(MPI_Allgather(&mine, 1, MPI_INT64_T, counts64.data(), 1, MPI_INT64_T, comm));

  std::vector<int> counts(counts64.size()), displs(counts64.size());
  std::int64_t total = 0;
  for (std::size_t r = 0; r < counts64.size(); ++r) {
    counts[r] = mpi_count(counts64[r], what);
    displs[r] = static_cast<int>(total);  // already checked when it was summed
    total = mpi_count(total + counts64[r], what);
  }

  const bool receives = !root || *root == rank;
  std::vector<T> flat(receives ? static_cast<std::size_t>(total) : 0);
  const int send_count = counts[static_cast<std::size_t>(rank)];
  if (root) {
    RANKTUNE_MPI_CHECK(
        MPI_Gatherv(data, send_count, type, flat.data(), counts.data(), displs.data(), type, *root, comm));
  } else {
    RANKTUNE_MPI_CHECK(MPI_Allgatherv(data, send_count, type, flat.data(), counts.data(), displs.data(), type, comm));
  }

  std::vector<Part> out;
  if (!receives) return out;
  out.reserve(counts.size());
  for (std::size_t r = 0; r < counts.size(); ++r)
    out.emplace_back(flat.begin() + displs[r], flat.begin() + displs[r] + counts[r]);
  return out;
}

}  // namespace

void broadcast(const MpiEnv& env, std::string& s, int root) {
  const int n = broadcast_count(env.world(), s.size(), root, "string broadcast");
  s.resize(static_cast<std::size_t>(n));
  RANKTUNE_MPI_CHECK(MPI_Bcast(s.data(), n, MPI_CHAR, root, env.world()));
}

void broadcast(const MpiEnv& env, std::vector<std::int64_t>& values, int root) {
  const int n = broadcast_count(env.world(), values.size(), root, "integer broadcast");
  values.resize(static_cast<std::size_t>(n));
  RANKTUNE_MPI_CHECK(MPI_Bcast(values.data(), n, MPI_INT64_T, root, env.world()));
}

void broadcast(const MpiEnv& env, std::int64_t& value, int root) {
  RANKTUNE_MPI_CHECK(MPI_Bcast(&value, 1, MPI_INT64_T, root, env.world()));
}

std::int64_t sum(const MpiEnv& env, std::int64_t value, Scope scope) {
  std::int64_t out = 0;
  RANKTUNE_MPI_CHECK(MPI_Allreduce(&value, &out, 1, MPI_INT64_T, MPI_SUM, comm_of(env, scope)));
  return out;
}

double sum(const MpiEnv& env, double value, Scope scope) {
  double out = 0;
  RANKTUNE_MPI_CHECK(MPI_Allreduce(&value, &out, 1, MPI_DOUBLE, MPI_SUM, comm_of(env, scope)));
  return out;
}

void sum(const MpiEnv& env, std::vector<double>& values, Scope scope) {
  const int n = mpi_count(static_cast<std::int64_t>(values.size()), "vector sum");
  RANKTUNE_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, values.data(), n, MPI_DOUBLE, MPI_SUM, comm_of(env, scope)));
}

std::int64_t max(const MpiEnv& env, std::int64_t value, Scope scope) {
  std::int64_t out = 0;
  RANKTUNE_MPI_CHECK(MPI_Allreduce(&value, &out, 1, MPI_INT64_T, MPI_MAX, comm_of(env, scope)));
  return out;
}

std::int64_t min(const MpiEnv& env, std::int64_t value, Scope scope) {
  std::int64_t out = 0;
  RANKTUNE_MPI_CHECK(MPI_Allreduce(&value, &out, 1, MPI_INT64_T, MPI_MIN, comm_of(env, scope)));
  return out;
}

bool any(const MpiEnv& env, bool value, Scope scope) {
  int mine = value ? 1 : 0, out = 0;
  RANKTUNE_MPI_CHECK(MPI_Allreduce(&mine, &out, 1, MPI_INT, MPI_LOR, comm_of(env, scope)));
  return out != 0;
}

std::vector<std::uint64_t> all_gather(const MpiEnv& env, std::uint64_t value, Scope scope) {
  const MPI_Comm comm = comm_of(env, scope);
  int size = 0;
  RANKTUNE_MPI_CHECK(MPI_Comm_size(comm, &size));
  std::vector<std::uint64_t> out(static_cast<std::size_t>(size));
  RANKTUNE_MPI_CHECK(MPI_Allgather(&value, 1, MPI_UINT64_T, out.data(), 1, MPI_UINT64_T, comm));
  return out;
}

std::vector<std::string> all_gather(const MpiEnv& env, const std::string& value, Scope scope) {
  return gather_varying<std::string>(comm_of(env, scope), value.data(), value.size(), MPI_CHAR, std::nullopt,
                                     "string all-gather");
}

std::vector<std::vector<std::uint64_t>> all_gather(const MpiEnv& env, const std::vector<std::uint64_t>& values,
                                                   Scope scope) {
  return gather_varying<std::vector<std::uint64_t>>(comm_of(env, scope), values.data(), values.size(), MPI_UINT64_T,
                                                    std::nullopt, "integer all-gather");
}

std::vector<std::vector<std::uint64_t>> gather(const MpiEnv& env, const std::vector<std::uint64_t>& values, int root) {
  return gather_varying<std::vector<std::uint64_t>>(env.world(), values.data(), values.size(), MPI_UINT64_T, root,
                                                    "integer gather");
}

std::vector<std::string> gather_bytes(const MpiEnv& env, const std::string& bytes, int root, std::size_t chunk) {
  const MPI_Comm comm = env.world();
  const int size = env.size();
  const std::vector<std::uint64_t> sizes = all_gather(env, static_cast<std::uint64_t>(bytes.size()));
  // Each round moves at most `chunk` bytes per rank, and a round's total must be one MPI count.
  const std::uint64_t limit = static_cast<std::uint64_t>(std::numeric_limits<int>::max()) / static_cast<unsigned>(size);
  const std::uint64_t step = chunk == 0 ? limit : std::min<std::uint64_t>(chunk, limit);
  std::uint64_t largest = 0;
  for (const std::uint64_t n : sizes) largest = std::max(largest, n);
  const bool receives = env.rank() == root;
  std::vector<std::string> out;
  bool short_of_memory = false;
  try {  // the root sizes its parts first and every rank learns whether it could: no rank waits in a gather alone
    if (receives) {
      out.resize(static_cast<std::size_t>(size));
      for (int r = 0; r < size; ++r) out[static_cast<std::size_t>(r)].resize(sizes[static_cast<std::size_t>(r)]);
    }
  } catch (const std::bad_alloc&) {
    short_of_memory = true;
  }
  if (any(env, short_of_memory)) {
    std::uint64_t total = 0;
    for (const std::uint64_t n : sizes) total += n;
    throw OutOfMemoryError("rank " + std::to_string(root) + " cannot hold the " + std::to_string(total) +
                               " bytes gathered from " + std::to_string(size) + " ranks",
                           "give rank " + std::to_string(root) + " more host memory");
  }
  std::vector<int> counts(static_cast<std::size_t>(size)), displs(static_cast<std::size_t>(size));
  std::vector<char> flat;
  for (std::uint64_t offset = 0; offset < largest; offset += step) {
    int total = 0;
    for (std::size_t r = 0; r < counts.size(); ++r) {
      const std::uint64_t n = sizes[r] > offset ? std::min(step, sizes[r] - offset) : 0;
      counts[r] = static_cast<int>(n);
      displs[r] = total;
      total += counts[r];
    }
    if (receives) flat.resize(static_cast<std::size_t>(total));
    const std::size_t mine = static_cast<std::size_t>(env.rank());
    RANKTUNE_MPI_CHECK(MPI_Gatherv(bytes.data() + std::min<std::uint64_t>(offset, bytes.size()), counts[mine], MPI_CHAR,
                                   flat.data(), counts.data(), displs.data(), MPI_CHAR, root, comm));
    if (!receives) continue;
    for (std::size_t r = 0; r < counts.size(); ++r)
      if (counts[r] > 0) std::copy_n(flat.data() + displs[r], counts[r], out[r].data() + offset);
  }
  return out;
}

void barrier(const MpiEnv& env, Scope scope) { RANKTUNE_MPI_CHECK(MPI_Barrier(comm_of(env, scope))); }

Outcome worst(const MpiEnv& env, int code, const std::string& message) {
  // MAXLOC keeps the highest code and, among equal codes, the lowest rank: one collective when nothing failed, which
  // matters because signals_agree runs this every training step.
  struct {
    int code;
    int rank;
  } mine{code, env.rank()}, top{0, 0};
  RANKTUNE_MPI_CHECK(MPI_Allreduce(&mine, &top, 1, MPI_2INT, MPI_MAXLOC, env.world()));
  if (top.code == 0) return {};
  Outcome out{top.code, env.rank() == top.rank ? message : std::string(), top.rank};
  broadcast(env, out.message, top.rank);
  return out;
}

}  // namespace ranktune::host
