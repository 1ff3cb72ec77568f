// `ranktune prepare`: text/JSONL files -> tokenizer -> records -> packed rows -> HDF5 token dataset (docs/data.md).
// Its threads parse and tokenize batches of records (prepare.threads), one writer keeps the row order that of the
// inputs; under mpirun the ranks share the tokenizing and rank 0 writes the same file (prepare_ranks).
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <system_error>

#include "ranktune/app/commands.h"
#include "ranktune/app/tokenizer_choice.h"
#include "ranktune/core/log.h"
#include "ranktune/data/data_error.h"
#include "ranktune/data/sources.h"
#include "ranktune/distributed/agree.h"
#include "ranktune/distributed/host_collectives.h"
#include "ranktune/distributed/mpi_env.h"
#include "ranktune/io/h5.h"
#include "ranktune/io/token_dataset.h"
#include "ranktune/train/byte_progress.h"
#include "ranktune/train/progress.h"

namespace ranktune {
namespace {

void check_request(const AppContext& ctx) {
  const Config& cfg = ctx.cfg;
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

// Errors of the output file name it and say what to check.
template <class F>
void on_output(F&& f) {
  try {
    f();
  } catch (const h5::H5Error& e) {
    throw DataError(std::string("prepare.output: ") + e.what(), "check that the directory is writable");
  } catch (const std::system_error& e) {
    throw DataError(std::string("prepare.output: ") + e.what(), "check that the directory is writable");
  }
}

// Under mpirun: every rank reads the records, each tokenizes its batches (SourcesEncoder), rank 0 gathers them in
// order and packs and writes as one process would. Each step is agreed, so an error on any rank (a bad record is
// raised by rank 0 when it packs it, as in one process) ends every rank with the same code and nobody waits.
SourcesStats prepare_ranks(const MpiEnv& env, const Config& cfg, const Tokenizer& tok,
                           const std::vector<std::string>& files, const SourcesOptions& sources, std::int64_t& rows,
                           int& shards) {
  const bool root = env.rank() == 0;
  const int batch_threads = static_cast<int>(host::max(env, sources.threads));
  std::unique_ptr<SourcesEncoder> encoder;
  std::optional<TokenDatasetWriter> writer;
  std::optional<ByteProgress> progress;
  std::optional<SourcesPacker> packer;
  agree_run(env, [&] {
    encoder = std::make_unique<SourcesEncoder>(files, tok, sources, env.rank(), env.size(), batch_threads);
    if (!root) return;
    on_output([&] { writer.emplace(cfg.prepare.output, cfg.train.seq_len, cfg.prepare.shard_rows); });
    progress.emplace(std::cout, "prepare", Progress::stdout_is_tty());
    packer.emplace(
        files, tok, sources, [&writer](const PackedRow& r) { writer->add(r); },
        [&](std::uint64_t done, std::uint64_t total) {
          progress->update(done, total, std::to_string(writer->rows()) + " rows");
        });
  });
  while (true) {
    std::string mine;
    bool more = false;
    agree_run(env, [&] { more = encoder->next(mine); });
    if (!host::any(env, more)) break;
    const std::vector<std::string> parts = host::gather_bytes(env, mine);
    agree_run(env, [&] {
      if (!root) return;
      on_output([&] {
        for (const std::string& part : parts) packer->add(part);
      });
    });
  }
  SourcesStats st;
  agree_run(env, [&] {
    encoder.reset();
    if (!root) return;
    on_output([&] {
      progress->finish();
      st = packer->finish();
      writer->commit(info_of(cfg, tok, files, st));
      rows = writer->rows();
      shards = writer->shards();
    });
  });
  return st;
}

void prepare(const AppContext& ctx) {
  const auto t0 = std::chrono::steady_clock::now();
  const MpiEnv& env = ctx.env;
  const Config& given = ctx.cfg;
  const CpuThreads& cpu = ctx.cpu_threads;
  Config cfg = given;
  std::unique_ptr<Tokenizer> tok;
  std::vector<std::string> files;
  SourcesOptions sources;
  agree_run(env, [&] {
    check_request(ctx);
    const TokenizerChoice choice = tokenizer_choose(given.data.tokenizer, given.model.path);
    cfg.data.tokenizer = choice.spec;  // what the dataset records and `train` compares with its own choice
    files = sources_split(cfg.data.path);
    tok = tokenizer_open(choice);
    sources = sources_options_from(cfg);
  });
  log0() << "prepare: " << files.size() << " file(s) -> " << cfg.prepare.output << ", tokenizer " << tok->describe()
         << ", rows of " << cfg.train.seq_len << " tokens, overlong=" << cfg.data.overlong
         << ", packing=" << cfg.data.packing << ", on_bad_record=" << cfg.data.on_bad_record;
  sources.threads = cfg.prepare.threads > 0 ? cfg.prepare.threads : cpu.threads;
  log0() << "prepare: " << (env.size() > 1 ? std::to_string(env.size()) + " rank(s), " : std::string())
         << sources.threads << " thread(s) tokenizing" << (env.size() > 1 ? " on rank 0" : "") << " ("
         << (cfg.prepare.threads > 0 ? "prepare.threads" : "prepare.threads=0: " + cpu.reason) << ")";

  SourcesStats st;
  std::int64_t rows = 0;
  int shards = 0;
  if (env.size() > 1) {
    st = prepare_ranks(env, cfg, *tok, files, sources, rows, shards);
  } else {
    on_output([&] {
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
    });
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
  // Every step agrees (agree_run) inside: errors get the same one-line form and exit code as train's on every rank.
  agree_run(ctx.env, [&] { prepare(ctx); });
  return 0;
}

}  // namespace ranktune
