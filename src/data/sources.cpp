// Files -> records -> token documents -> rows, with the skip policy applied to parse and encode failures alike.
#include "ranktune/data/sources.h"

#include <array>
#include <exception>
#include <filesystem>
#include <mutex>
#include <optional>
#include <system_error>

#include "ranktune/core/log.h"
#include "ranktune/data/chat_template.h"
#include "ranktune/data/data_error.h"
#include "ranktune/data/record.h"
#include "ranktune/data/worker_pool.h"

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

}  // namespace

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
  // Chosen at the first messages record: text-only data never needs a chat format, nor fails for want of one.
  std::optional<ChatFormat> chat;
  static const ChatFormat kNoChat(ChatFamily::plain);
  stats.chat_template = "none";
  stats.pad_id = tok.pad_id().value_or(tok.eos_id().value_or(0));
  PackOptions pack;
  pack.seq_len = options.seq_len;
  pack.overflow = options.overflow;
  pack.pad_id = stats.pad_id;
  pack.fill_rows = options.fill_rows;
  Packer packer(pack, sink);

  // Records go in batches, parsed and tokenized on every thread while this one reads the next batch and packs the
  // previous one in file order.
  struct Slot {
    RawRecord raw;
    std::uint64_t done = 0;  // bytes of all files consumed up to the end of this record (progress)
    std::optional<Record> rec;
    TokenizedDoc doc;
    std::exception_ptr error;  // a DataError of this record: malformed (rec empty) or not encodable
    std::exception_ptr fatal;  // no chat format for a messages record: ends the run, as it always did
  };
  std::mutex chat_mu;  // the chat format is made once, by the first thread to meet a messages record
  auto encode = [&](Slot& s) {
    try {
      s.rec = record_parse(std::move(s.raw));
    } catch (const DataError&) {
      s.error = std::current_exception();
      return;
    }
    const ChatFormat* format = &kNoChat;
    if (s.rec->kind == Record::Kind::chat) {
      std::lock_guard<std::mutex> lock(chat_mu);
      if (!chat) {
        try {
          chat.emplace(chat_format_parse(options.chat_template, tok));
        } catch (...) {
          s.fatal = std::current_exception();
          return;
        }
      }
      format = &*chat;
    }
    try {
      s.doc = record_tokenize(*s.rec, tok, *format);
    } catch (const DataError&) {
      s.error = std::current_exception();
    }
  };

  const std::uint64_t total = total_bytes(paths);
  std::size_t next_file = 0;
  std::optional<RecordReader> reader;
  std::uint64_t done_before = 0;
  auto read_batch = [&](std::vector<Slot>& batch, std::size_t max_records, std::uint64_t max_bytes) {
    batch.clear();
    for (std::uint64_t bytes = 0; batch.size() < max_records && bytes < max_bytes;) {
      if (!reader) {
        if (next_file == paths.size()) return;
        reader.emplace(paths[next_file++], RecordReaderOptions{options.skip_bad_records});
      }
      const std::uint64_t before = reader->stats().bytes;
      std::optional<RawRecord> raw = reader->next_raw();
      bytes += reader->stats().bytes - before;
      if (!raw) {
        done_before += reader->stats().bytes;
        reader.reset();
        continue;
      }
      batch.push_back({std::move(*raw), done_before + reader->stats().bytes, {}, {}, {}, {}});
    }
  };
  bool chat_logged = false;
  auto pack_batch = [&](std::vector<Slot>& batch) {
    for (Slot& s : batch) {
      if (s.fatal) std::rethrow_exception(s.fatal);
      if (s.rec && s.rec->kind == Record::Kind::chat && !chat_logged) {
        stats.chat_template = chat->name();
        log0() << "chat format: " << chat->describe();
        chat_logged = true;
      }
      if (s.error) {
        try {
          std::rethrow_exception(s.error);
        } catch (const DataError& e) {  // a parse error carries its own hint naming the flag
          if (!options.skip_bad_records) {
            if (!s.rec) throw;
            throw DataError(e.what(), kSkipHint);
          }
          if (stats.first_skipped.empty()) stats.first_skipped = e.what();
          ++stats.skipped;
        }
        continue;
      }
      ++stats.records;
      packer.add(s.doc);
      s.doc = {};
      if (progress) progress(s.done, total);
    }
  };

  std::array<std::vector<Slot>, 2> batches;
  // Declared after everything its threads touch: on an exception it is destroyed first, and joins them.
  WorkerPool pool(options.threads);
  const std::size_t max_records = 256 * static_cast<std::size_t>(pool.threads());
  const std::uint64_t max_bytes = (std::uint64_t{1} << 20) * static_cast<std::uint64_t>(pool.threads());
  auto start = [&](std::vector<Slot>& batch) {
    pool.start(batch.size(), [&batch, &encode](std::size_t i) { encode(batch[i]); });
  };
  int cur = 0;
  read_batch(batches[cur], max_records, max_bytes);
  start(batches[cur]);
  while (!batches[cur].empty()) {
    std::vector<Slot>& next = batches[1 - cur];
    read_batch(next, max_records, max_bytes);
    pool.wait();
    start(next);
    pack_batch(batches[cur]);
    cur = 1 - cur;
  }
  pool.wait();
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
