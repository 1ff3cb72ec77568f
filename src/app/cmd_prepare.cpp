// `ranktune prepare`: text/JSONL files -> tokenizer -> records -> packed rows -> HDF5 token dataset (docs/data.md).
// One process: its threads parse and tokenize batches of records (prepare.threads), one writer keeps the row order
// that of the inputs.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <system_error>

#include "ranktune/app/commands.h"
#include "ranktune/app/tokenizer_choice.h"
#include "ranktune/core/log.h"
#include "ranktune/data/data_error.h"
#include "ranktune/data/sources.h"
#include "ranktune/distributed/agree.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/io/h5.h"
#include "ranktune/io/token_dataset.h"
#include "ranktune/train/byte_progress.h"
#include "ranktune/train/progress.h"

namespace ranktune {
namespace {

void check_request(const AppContext& ctx) {
  const Config& cfg = ctx.cfg;
  if (ctx.env.size() > 1)
    throw UsageError("`ranktune prepare` runs as one process, not " + std::to_string(ctx.env.size()) + " ranks",
                     "run it without mpirun/srun; `ranktune train` then reads the dataset at any world size");
  if (cfg.data.path.empty()) throw UsageError("prepare needs input files", "--data.path=FILE.jsonl[,FILE2.txt...]");
  if (TokenDatasetReader::is_dataset_path(cfg.data.path))
    throw UsageError("data.path '" + cfg.data.path + "' is already a prepared dataset (or a directory)",
                     "give text or JSONL files to prepare");
  if (cfg.prepare.output.empty())
    throw UsageError("prepare needs an output",
                     cfg.prepare.shard_rows > 0 ? "--prepare.output=DIR (shard directory)" : "--prepare.output=OUT.h5");
}

TokenDatasetInfo info_of(const Config& cfg, const Tokenizer& tok, const std::vector<std::string>& files,
                         const SourcesStats& st) {
  TokenDatasetInfo info;
  info.tokenizer = cfg.data.tokenizer;
  info.tokenizer_fingerprint = tokenizer_fingerprint(cfg.data.tokenizer);
  info.vocab_size = tok.vocab_size();
  info.pad_id = st.pad_id;
  info.packing = cfg.data.packing;
  info.overlong = cfg.data.overlong;
  info.chat_template = st.chat_template;
  info.sources = files;
  info.records = st.records;
  info.skipped_records = st.skipped;
  info.pack = st.pack;
  return info;
}

void prepare(const Config& given, const CpuThreads& cpu) {
  const auto t0 = std::chrono::steady_clock::now();
  const TokenizerChoice choice = tokenizer_choose(given.data.tokenizer, given.model.path);
  Config cfg = given;
  cfg.data.tokenizer = choice.spec;  // what the dataset records and `train` compares with its own choice
  const std::vector<std::string> files = sources_split(cfg.data.path);
  const std::unique_ptr<Tokenizer> tok = tokenizer_open(choice);
  log0() << "prepare: " << files.size() << " file(s) -> " << cfg.prepare.output << ", tokenizer " << tok->describe()
         << ", rows of " << cfg.train.seq_len << " tokens, overlong=" << cfg.data.overlong
         << ", packing=" << cfg.data.packing << ", on_bad_record=" << cfg.data.on_bad_record;
  SourcesOptions sources = sources_options_from(cfg);
  sources.threads = cfg.prepare.threads > 0 ? cfg.prepare.threads : cpu.threads;
  log0() << "prepare: " << sources.threads << " thread(s) tokenizing ("
         << (cfg.prepare.threads > 0 ? "prepare.threads" : "prepare.threads=0: " + cpu.reason) << ")";

  SourcesStats st;
  std::int64_t rows = 0;
  int shards = 0;
  try {
    TokenDatasetWriter writer(cfg.prepare.output, cfg.train.seq_len, cfg.prepare.shard_rows);
    ByteProgress progress(std::cout, "prepare", Progress::stdout_is_tty());
    st = sources_pack(
        files, *tok, sources, [&writer](const PackedRow& r) { writer.add(r); },
        [&](std::uint64_t done, std::uint64_t total) {
          progress.update(done, total, std::to_string(writer.rows()) + " rows");
        });
    progress.finish();
    writer.commit(info_of(cfg, *tok, files, st));
    rows = writer.rows();
    shards = writer.shards();
  } catch (const h5::H5Error& e) {
    throw DataError(std::string("prepare.output: ") + e.what(), "check that the directory is writable");
  } catch (const std::system_error& e) {
    throw DataError(std::string("prepare.output: ") + e.what(), "check that the directory is writable");
  }

  if (st.skipped) log0() << "prepare: skipped " << st.skipped << " bad record(s); first: " << st.first_skipped;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const PackStats& p = st.pack;
  char line[512];
  std::snprintf(line, sizeof line,
                "prepared %s: %ld records, %ld documents, %lld rows of %d (%d file%s), %ld tokens, %ld loss tokens, "
                "%ld truncated, %ld split, %ld skipped, %.1f s",
                cfg.prepare.output.c_str(), st.records, p.documents, static_cast<long long>(rows), cfg.train.seq_len,
                shards, shards == 1 ? "" : "s", p.tokens, p.target_tokens, p.truncated_documents, p.split_documents,
                st.skipped, secs);
  log0() << line;
}

}  // namespace

int cmd_prepare(const AppContext& ctx) {
  // One rank (checked first); agree_run gives its errors the same one-line form and exit code as train's.
  agree_run(ctx.env, [&] {
    check_request(ctx);
    prepare(ctx.cfg, ctx.cpu_threads);
  });
  return 0;
}

}  // namespace ranktune
