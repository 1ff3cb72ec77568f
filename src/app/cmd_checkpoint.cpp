// `ranktune checkpoint inspect|verify PATH`: rank 0 reads every file of the step (any world size wrote it) and
// prints the summary or the verdict; a damaged or missing checkpoint exits 5 on every rank. Both check each file's
// CRC32C against the manifest before HDF5 reads it; inspect describes only the files that passed.
#include "ranktune/app/commands.h"
#include "ranktune/core/error.h"
#include "ranktune/distributed/agree.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/io/checkpoint_verify.h"

#include <cstdio>

namespace ranktune {

int cmd_checkpoint(const AppContext& ctx) {
  const auto& args = ctx.request.args;
  agree_run(ctx.env, [&] {
    if (args.size() != 2 || (args[0] != "inspect" && args[0] != "verify"))
      throw UsageError("`ranktune checkpoint` takes an action and a path",
                       "ranktune checkpoint inspect|verify PATH (a step directory or a checkpoint root)");
  });
  const auto locking = h5::file_locking_parse(ctx.cfg.checkpoint.file_locking);
  agree_run(ctx.env, [&] {
    if (ctx.env.rank() != 0) return;
    const VerifyReport report = checkpoint_verify(args[1], locking);
    const std::string text = args[0] == "inspect" ? checkpoint_inspect(report, locking) : verify_report_text(report);
    std::fputs(text.c_str(), stdout);
    std::fflush(stdout);
    if (!report.ok())
      throw CheckpointError(std::to_string(report.problems.size()) + " problem(s) in " + args[1] + ": " +
                                report.problems.front(),
                            "resume from another step (--resume=auto picks the newest intact one)");
  });
  return 0;
}

}  // namespace ranktune
