// Files -> records -> token documents -> rows, with the skip policy applied to parse and encode failures alike.
#include "ranktune/data/sources.h"

#include <filesystem>
#include <system_error>

#include "ranktune/data/chat_template.h"
#include "ranktune/data/data_error.h"
#include "ranktune/data/record.h"

namespace ranktune {
namespace {

constexpr const char* kSkipHint = "fix the record, or pass --data.on_bad_record=skip to skip and count bad records";

std::uint64_t total_bytes(const std::vector<std::string>& paths) {
  std::uint64_t total = 0;
  for (const auto& p : paths) {
    std::error_code ec;
    const auto n = std::filesystem::file_size(p, ec);
    if (!ec) total += n;  // an unreadable file is reported by its reader, with the reason
  }
  return total;
}

// Opening a FIFO blocks until a writer comes, /dev/zero never ends and a directory reads as nothing: all refused
// before any file is read. A missing file is left to its reader, which says why it cannot be opened.
void require_regular_files(const std::vector<std::string>& paths) {
  namespace fs = std::filesystem;
  for (const auto& p : paths) {
    std::error_code ec;
    const fs::file_type type = fs::status(p, ec).type();
    if (ec || type == fs::file_type::regular || type == fs::file_type::not_found) continue;
    const char* kind = type == fs::file_type::directory   ? "a directory"
                       : type == fs::file_type::fifo      ? "a FIFO"
                       : type == fs::file_type::character ? "a character device"
                       : type == fs::file_type::block     ? "a block device"
                       : type == fs::file_type::socket    ? "a socket"
                                                          : "not a regular file";
    throw DataError("data.path '" + p + "' is " + kind + ", not a regular file",
                    "point --data.path at text or JSONL files (or a directory prepared by `ranktune prepare`)");
  }
}

}  // namespace

SourcesOptions sources_options_from(const Config& cfg) {
  SourcesOptions o;
  o.seq_len = cfg.train.seq_len;
  o.overflow = overflow_parse(cfg.data.overlong);
  o.fill_rows = cfg.data.packing == "fill";
  o.skip_bad_records = cfg.data.on_bad_record == "skip";
  o.chat_template = cfg.data.chat_template;
  return o;
}

SourcesStats sources_pack(const std::vector<std::string>& paths, const Tokenizer& tok, const SourcesOptions& options,
                          const Packer::Sink& sink, const SourcesProgress& progress) {
  if (paths.empty()) throw DataError("no input files given", "set --data.path=FILE[,FILE...]");
  require_regular_files(paths);
  SourcesStats stats;
  const ChatFamily family = chat_family_parse(options.chat_template, tok);
  stats.chat_template = chat_family_name(family);
  stats.pad_id = tok.pad_id().value_or(tok.eos_id().value_or(0));
  PackOptions pack;
  pack.seq_len = options.seq_len;
  pack.overflow = options.overflow;
  pack.pad_id = stats.pad_id;
  pack.fill_rows = options.fill_rows;
  Packer packer(pack, sink);

  const std::uint64_t total = total_bytes(paths);
  std::uint64_t done_before = 0;
  for (const auto& path : paths) {
    RecordReader reader(path, RecordReaderOptions{options.skip_bad_records});
    while (true) {
      const std::optional<Record> rec = reader.next();  // a parse error carries its own hint naming the flag
      if (!rec) break;
      TokenizedDoc doc;
      try {
        doc = record_tokenize(*rec, tok, family);
      } catch (const DataError& e) {
        if (!options.skip_bad_records) throw DataError(e.what(), kSkipHint);
        if (stats.first_skipped.empty()) stats.first_skipped = e.what();
        ++stats.skipped;
        continue;
      }
      ++stats.records;
      packer.add(doc);
      if (progress) progress(done_before + reader.stats().bytes, total);
    }
    stats.skipped += reader.stats().skipped;
    if (stats.first_skipped.empty()) stats.first_skipped = reader.stats().first_skipped;
    done_before += reader.stats().bytes;
  }
  packer.finish();
  if (progress) progress(total, total);
  stats.pack = packer.stats();
  return stats;
}

std::vector<std::string> sources_split(const std::string& list) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    const auto comma = list.find(',', start);
    std::string item = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (item.empty()) throw DataError("empty file name in the list '" + list + "'", "write FILE[,FILE...]");
    out.push_back(std::move(item));
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

}  // namespace ranktune
