// Writes the fixture checkpoints that check_h5py.py, the `ranktune checkpoint` script and the reshard test read:
// DIR/replicated and DIR/per_rank, both step 7, from however many ranks run this (CTest: 2).
#include <cstdio>

#include "io/fixture_state.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/io/checkpoint.h"
#include "ranktune/io/durable_file.h"

using namespace ranktune;

int main(int argc, char** argv) {
  MpiEnv env(&argc, &argv);
  if (argc != 2) {
    std::fprintf(stderr, "usage: checkpoint_fixture DIR\n");
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  if (env.rank() == 0) remove_tree(dir);
  MPI_Barrier(env.world());
  for (const bool replicated : {true, false}) {
    SaveRequest req;
    req.dir = dir / (replicated ? "replicated" : "per_rank");
    req.step = 7;
    req.meta = {"ddp", "fixture", 0x0123456789abcdefULL, replicated};
    const SaveResult r = checkpoint_save(env, req, test::fixture_state(env.rank(), 7));
    if (!r.ok()) {
      std::fprintf(stderr, "fixture save failed: %s\n", r.message.c_str());
      return 1;
    }
  }
  return 0;
}
