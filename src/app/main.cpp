// ranktune: parse the command line, start MPI, agree on the config, run the subcommand. Errors end here: rank 0
// prints one `error:` line (and a `hint:` line) and every rank exits with the documented code (docs/exit-codes.md).
#include <cstdio>
#include <exception>
#include <optional>

#include "ranktune/app/commands.h"             // defines: cmd_topology, cmd_plan, cmd_train, cmd_checkpoint,
                                               //          cmd_export, cmd_prepare, cmd_generate, version_string
#include "ranktune/core/cli.h"                 // defines: cli_parse, cli_usage
#include "ranktune/core/error.h"               // defines: Error, ExitCode
#include "ranktune/core/log.h"                 // defines: log0, log_error
#include "ranktune/distributed/agree.h"        // defines: agree_run, agree_config_hash
#include "ranktune/distributed/cpu_threads.h"  // defines: cpu_threads_apply
#include "ranktune/distributed/mpi_env.h"      // defines: MpiEnv
#include "ranktune/distributed/signals.h"      // defines: signals_install
#include "ranktune/distributed/topology.h"     // defines: launch_env_capture

using namespace ranktune;

int main(int argc, char** argv) {
  signals_install();  // before anything slow: Slurm's SIGUSR1 would otherwise kill the process
  const LaunchEnv launch_env = launch_env_capture();  // before MPI starts and adds variables of its own

  CliRequest request;
  std::exception_ptr parse_error;
  try {
    request = cli_parse(argc, argv);
  } catch (...) {
    parse_error = std::current_exception();
  }
  if (!parse_error && request.version) {
    std::printf("%s\n", version_string().c_str());
    return 0;
  }
  if (!parse_error && request.help) {
    std::printf("%s", cli_usage(request.subcommand).c_str());
    return 0;
  }

  std::optional<MpiEnv> env;
  try {
    env.emplace(&argc, &argv);
    log_set_context({env->rank(), env->size(), env->host()});
    const CpuThreads cpu_threads = cpu_threads_apply(*env);  // ranks on one set of CPUs share them

    Config cfg;
    agree_run(*env, [&] {
      if (parse_error) std::rethrow_exception(parse_error);
      cfg = config_apply(request.values);
      config_apply_model_dir(cfg, request.values, request.subcommand);  // a bnb-4bit model.path: model.quantize=nf4
      config_validate(cfg);
      if (request.subcommand == "train" || request.subcommand == "plan") config_validate_train(cfg);
    });
    agree_config_hash(*env, config_hash(cfg));

    const AppContext ctx{*env, cfg, request, launch_env, cpu_threads};
    if (request.subcommand == "topology") return cmd_topology(ctx);
    if (request.subcommand == "plan") return cmd_plan(ctx);
    if (request.subcommand == "checkpoint") return cmd_checkpoint(ctx);
    if (request.subcommand == "export") return cmd_export(ctx);
    if (request.subcommand == "prepare") return cmd_prepare(ctx);
    if (request.subcommand == "generate") return cmd_generate(ctx);
    return cmd_train(ctx);
  } catch (const AgreedError& e) {
    // Every rank holds the same error: rank 0 speaks, all exit with its code.
    if (log_context().rank == 0) {
      std::fprintf(stderr, "ranktune: error: %s  [exit %d: %s]\n", e.what(), static_cast<int>(e.code()),
                   exit_code_name(e.code()));
      if (!e.hint().empty()) std::fprintf(stderr, "ranktune: hint: %s\n", e.hint().c_str());
    }
    return static_cast<int>(e.code());
  } catch (const Error& e) {
    log_error() << "error: " << e.what() << "  [exit " << static_cast<int>(e.code()) << ": " << exit_code_name(e.code())
                << "]";
    if (!e.hint().empty()) log_error() << "hint: " << e.hint();
    if (env && env->size() > 1) env->abort(static_cast<int>(e.code()));  // peers may be waiting in a collective
    return static_cast<int>(e.code());
  } catch (const std::exception& e) {
    log_error() << "internal error: " << e.what();
    if (env && env->size() > 1) env->abort(static_cast<int>(ExitCode::internal));
    return static_cast<int>(ExitCode::internal);
  }
}
