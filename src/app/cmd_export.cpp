// `ranktune export CHECKPOINT OUT_DIR`: rank 0 verifies the checkpoint and writes a PEFT adapter (LoRA) or a Hugging
// Face model directory (full fine-tune, or LoRA with --export.merge=true); see docs/checkpoint-format.md#export.
// With --export.format=gguf, OUT is one GGUF file for llama.cpp/Ollama (train/export_gguf.h, docs/models.md).
#include "ranktune/app/commands.h"
#include "ranktune/core/error.h"
#include "ranktune/core/log.h"
#include "ranktune/distributed/agree.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/train/export.h"
#include "ranktune/train/export_gguf.h"

namespace ranktune {

int cmd_export(const AppContext& ctx) {
  const auto& args = ctx.request.args;
  agree_run(ctx.env, [&] {
    if (args.size() != 2)
      throw UsageError("`ranktune export` takes a checkpoint and an output directory",
                       "ranktune export CHECKPOINT OUT_DIR, or CHECKPOINT OUT.gguf --export.format=gguf (CHECKPOINT: "
                       "a step directory or a checkpoint root)");
  });
  const ExportConfig& e = ctx.cfg.export_;
  const bool gguf = e.format == "gguf";
  agree_run(ctx.env, [&] {
    if (!gguf && e.dtype == "q8_0")
      throw UsageError("export.dtype=q8_0 is a GGUF type, but export.format=hf",
                       "add --export.format=gguf, or export with --export.dtype=bf16, fp16 or fp32");
    const std::string& out = args[1];
    if (!gguf && out.size() > 5 && out.compare(out.size() - 5, 5, ".gguf") == 0)
      throw UsageError("the output " + out + " ends in .gguf, but export.format=hf writes a directory",
                       "add --export.format=gguf");
  });
  if (gguf) {
    const GgufExportOptions g{e.dtype, e.overwrite, h5::file_locking_parse(ctx.cfg.checkpoint.file_locking)};
    agree_run(ctx.env, [&] {
      if (ctx.env.rank() != 0) return;
      const ExportResult r = checkpoint_export_gguf(args[0], args[1], g);
      log0() << "export: step " << r.step << " of " << r.step_dir.string() << " -> " << args[1] << ": " << r.what;
    });
    return 0;
  }
  ExportOptions options;
  const std::string& dtype = ctx.cfg.export_.dtype;
  options.dtype = dtype == "fp32" ? at::kFloat : dtype == "fp16" ? at::kHalf : at::kBFloat16;
  options.merge = ctx.cfg.export_.merge;
  options.overwrite = ctx.cfg.export_.overwrite;
  options.locking = h5::file_locking_parse(ctx.cfg.checkpoint.file_locking);
  agree_run(ctx.env, [&] {
    if (ctx.env.rank() != 0) return;
    const ExportResult r = checkpoint_export(args[0], args[1], options);
    log0() << "export: step " << r.step << " of " << r.step_dir.string() << " -> " << args[1] << ": " << r.what;
  });
  return 0;
}

}  // namespace ranktune
