// defines: sources_pack, the one path from input files to packed rows that both `ranktune prepare` and
// `ranktune train` on text take (so a prepared dataset holds exactly the rows training on the text would see):
// text/JSONL files read in order, malformed records an error naming file:line or skipped and counted, each record
// tokenized (chat template for messages, prompt tokens masked) and packed; SourcesEncoder/SourcesPacker, the same
// split over the ranks of `prepare` under mpirun. Also sources_split for "a.jsonl,b.txt".
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ranktune/core/config.h"
#include "ranktune/data/packer.h"
#include "ranktune/data/tokenizer.h"

namespace ranktune {

struct SourcesOptions {
  int seq_len = 128;
  Overflow overflow = Overflow::split;  // a document longer than a row: truncate or split
  bool fill_rows = false;               // PackOptions::fill_rows
  bool skip_bad_records = false;        // false: a malformed record is a DataError naming file:line
  std::string chat_template = "auto";   // data.chat_template (chat_format_parse)
  int threads = 1;  // records parsed and tokenized at once (prepare.threads); the rows are the same for any count
};

struct SourcesStats {
  long records = 0;           // records read (skipped ones not included)
  long skipped = 0;           // malformed or unencodable records skipped under skip_bad_records
  std::string first_skipped;  // the message of the first one
  std::string chat_template;  // the chat format used for messages records ("template", a family), "none" without
  std::int32_t pad_id = 0;    // the input id of padding: the tokenizer's pad, else eos, else 0
  PackStats pack;
};

// The [data] keys (on_bad_record, overlong, packing, chat_template) and train.seq_len.
SourcesOptions sources_options_from(const Config& cfg);

// Called after every record with the bytes consumed so far and the total size of the files.
using SourcesProgress = std::function<void(std::uint64_t done, std::uint64_t total)>;

SourcesStats sources_pack(const std::vector<std::string>& paths, const Tokenizer& tok, const SourcesOptions& options,
                          const Packer::Sink& sink, const SourcesProgress& progress = {});

// `prepare` under mpirun (the app passes the bytes between ranks; nothing here knows MPI). Every rank reads all the
// records in the batches sources_pack makes; batch b of each round of `ranks` batches is parsed and tokenized by rank
// b, and rank 0 packs the encoded batches in rank order, so the rows, stats and errors are those of sources_pack.
class SourcesEncoder {
 public:
  // batch_threads sets the batch size and must be the same on every rank (the largest options.threads of all).
  SourcesEncoder(const std::vector<std::string>& paths, const Tokenizer& tok, const SourcesOptions& options, int rank,
                 int ranks, int batch_threads);
  ~SourcesEncoder();
  // Reads the next round of batches and encodes this rank's one into `encoded` (empty when it has none); false once
  // the files are done, on every rank alike. Bad records travel in `encoded`, to be raised or skipped by the packer.
  bool next(std::string& encoded);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class SourcesPacker {
 public:
  SourcesPacker(const std::vector<std::string>& paths, const Tokenizer& tok, const SourcesOptions& options,
                const Packer::Sink& sink, const SourcesProgress& progress = {});
  ~SourcesPacker();
  void add(const std::string& encoded);  // in record order; throws for a bad record as sources_pack does
  SourcesStats finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// "a.jsonl,b.txt" -> {"a.jsonl", "b.txt"}; DataError on an empty item.
std::vector<std::string> sources_split(const std::string& list);

// DataError naming the first path that exists but is not a regular file (a FIFO, a device, a directory), which would
// block or never end when read; missing paths pass (their reader says so). Also used for prepared .h5 files.
void require_regular_files(const std::vector<std::string>& paths);

}  // namespace ranktune
