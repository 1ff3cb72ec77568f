// ranktune_checkpoint_write_bench: one rank file of a checkpoint written, committed and checksummed as a save does
// (checkpoint_file_write, file_commit, crc32c_file), timed by phase, with the chunk writer of the tree (direct
// chunks, checksums on the intra-op threads) and with HDF5's filter pipeline (the reference), alternating, in one
// process. The state: float32 tensors of --tensor-mb MiB (default 64) summing to --gb GB (default 3.2), filled with
// non-repeating values. Prints a markdown table and the median rate of each path.
// Usage: ranktune_checkpoint_write_bench DIR [--gb G] [--tensor-mb M] [--rounds N] [--threads T] [--direct-first 1]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "ranktune/io/checkpoint_file.h"
#include "ranktune/io/crc32c.h"
#include "ranktune/io/durable_file.h"

using namespace ranktune;
namespace fs = std::filesystem;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR [--gb G] [--tensor-mb M] [--rounds N] [--threads T] [--direct-first 1]\n",
                 argv[0]);
    return 2;
  }
  const fs::path dir = argv[1];
  double gb = 3.2, tensor_mb = 64;
  int rounds = 3, threads = at::get_num_threads(), direct_first = 0;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--gb") gb = std::atof(argv[i + 1]);
    else if (k == "--tensor-mb") tensor_mb = std::atof(argv[i + 1]);
    else if (k == "--rounds") rounds = std::atoi(argv[i + 1]);
    else if (k == "--threads") threads = std::atoi(argv[i + 1]);
    else if (k == "--direct-first") direct_first = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  at::set_num_threads(threads);
  fs::create_directories(dir);
  const std::int64_t numel = static_cast<std::int64_t>(tensor_mb * (1 << 20) / 4);
  const int count = std::max(1, static_cast<int>(gb * 1e9 / (static_cast<double>(numel) * 4)));
  CheckpointState state;
  for (int i = 0; i < count; ++i)
    state.tensors["model.t" + std::to_string(i)] = at::arange(numel, at::kFloat).mul_(1.000001).add_(i * 0.5);
  std::printf("%d float32 tensors of %.0f MiB (%.2f GB), %d intra-op thread(s), %s\n\n", count, tensor_mb,
              static_cast<double>(count) * static_cast<double>(numel) * 4 / 1e9, threads, dir.c_str());
  std::printf(
      "| round | writer | HDF5 write s | fsync + rename s | CRC32C s | all s | GB/s "
      "|\n|---|---|---|---|---|---|---|\n");
  std::vector<double> rate[2];
  for (int r = 0; r < rounds; ++r) {
    for (const bool second : {false, true}) {
      const bool direct = second != (direct_first != 0);
      const fs::path final_path = dir / "rank_00000.h5", tmp = dir / "rank_00000.h5.tmp";
      fs::remove(final_path);
      const auto t0 = std::chrono::steady_clock::now();
      checkpoint_file_write(tmp, state, RankFileHeader{1, 0, 1, "single", "bench"}, h5::FileLocking::best_effort,
                            direct);
      const double write_s = seconds_since(t0);
      const auto t1 = std::chrono::steady_clock::now();
      file_commit(tmp, final_path);
      const double commit_s = seconds_since(t1);
      const auto t2 = std::chrono::steady_clock::now();
      const FileDigest d = crc32c_file(final_path);
      const double crc_s = seconds_since(t2), all = seconds_since(t0);
      const double gbs = static_cast<double>(d.size) / 1e9 / all;
      rate[direct].push_back(gbs);
      std::printf("| %d | %s | %.2f | %.2f | %.2f | %.2f | %.2f |\n", r + 1,
                  direct ? "direct chunks" : "filter pipeline", write_s, commit_s, crc_s, all, gbs);
      std::fflush(stdout);
    }
  }
  fs::remove(dir / "rank_00000.h5");
  std::printf("\nmedian GB/s: filter pipeline %.2f, direct chunks %.2f\n", median(rate[0]), median(rate[1]));
  return 0;
}
