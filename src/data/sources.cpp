// Files -> records -> token documents -> rows, with the skip policy applied to parse and encode failures alike.
#include "ranktune/data/sources.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <exception>
#include <filesystem>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <system_error>

#include "ranktune/core/log.h"
#include "ranktune/data/chat_template.h"
#include "ranktune/data/data_error.h"
#include "ranktune/data/record.h"
#include "ranktune/data/serial_stage.h"
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

namespace {

// One record on its way from the file to the packer.
struct Slot {
  RawRecord raw;
  std::uint64_t done = 0;  // bytes of all files consumed up to the end of this record (progress)
  bool parsed = false;     // false: malformed (error holds why)
  bool chat = false;       // a messages record
  TokenizedDoc doc;
  std::exception_ptr error;  // a DataError of this record: malformed (parsed false) or not encodable
  std::exception_ptr fatal;  // no chat format for a messages record: ends the run, as it always did
};

// Parses and tokenizes one record; safe on any thread.
class Encoder {
 public:
  Encoder(const Tokenizer& tok, const SourcesOptions& options) : tok_(tok), options_(options) {}

  void encode(Slot& s) {
    std::optional<Record> rec;
    try {
      rec = record_parse(std::move(s.raw));
    } catch (const DataError&) {
      s.error = std::current_exception();
      return;
    }
    s.raw = {};
    s.parsed = true;
    s.chat = rec->kind == Record::Kind::chat;
    static const ChatFormat kNoChat(ChatFamily::plain);
    const ChatFormat* format = &kNoChat;
    if (s.chat) {
      std::lock_guard<std::mutex> lock(mu_);  // the chat format is made once, by the first thread to need it
      if (!chat_) {
        try {
          chat_.emplace(chat_format_parse(options_.chat_template, tok_));
        } catch (...) {
          s.fatal = std::current_exception();
          return;
        }
      }
      format = &*chat_;
    }
    try {
      s.doc = record_tokenize(*rec, tok_, *format);
    } catch (const DataError&) {
      s.error = std::current_exception();
    }
  }

  // The chat format once a messages record made it, else nullptr. Set once and never changed after.
  const ChatFormat* chat() const {
    std::lock_guard<std::mutex> lock(mu_);
    return chat_ ? &*chat_ : nullptr;
  }

 private:
  const Tokenizer& tok_;
  const SourcesOptions& options_;
  mutable std::mutex mu_;
  std::optional<ChatFormat> chat_;
};

// The records of the files, in order, a batch at a time.
class BatchReader {
 public:
  BatchReader(const std::vector<std::string>& paths, const SourcesOptions& options)
      : paths_(paths), skip_(options.skip_bad_records) {}

  void read(std::vector<Slot>& batch, std::size_t max_records, std::uint64_t max_bytes) {
    batch.clear();
    for (std::uint64_t bytes = 0; batch.size() < max_records && bytes < max_bytes;) {
      if (!reader_) {
        if (next_file_ == paths_.size()) return;
        reader_.emplace(paths_[next_file_++], RecordReaderOptions{skip_});
      }
      const std::uint64_t before = reader_->stats().bytes;
      std::optional<RawRecord> raw = reader_->next_raw();
      bytes += reader_->stats().bytes - before;
      if (!raw) {
        done_before_ += reader_->stats().bytes;
        reader_.reset();
        continue;
      }
      batch.push_back({std::move(*raw), done_before_ + reader_->stats().bytes, false, false, {}, {}, {}});
    }
  }

 private:
  const std::vector<std::string>& paths_;
  bool skip_;
  std::size_t next_file_ = 0;
  std::optional<RecordReader> reader_;
  std::uint64_t done_before_ = 0;
};

// Applies the skip policy and packs the records in input order. `encoder`: the one that encoded the records in this
// process (sources_pack), whose chat format is reused; nullptr when other ranks encode them (prepare under mpirun).
class SlotPacker {
 public:
  SlotPacker(const Tokenizer& tok, const SourcesOptions& options, const Packer::Sink& sink,
             const SourcesProgress& progress, std::uint64_t total, const Encoder* encoder = nullptr)
      : tok_(tok),
        options_(options),
        progress_(progress),
        total_(total),
        encoder_(encoder),
        packer_(pack_options(tok, options), sink) {
    stats_.chat_template = "none";
    stats_.pad_id = pad_id(tok);
  }

  void pack(std::vector<Slot>& batch) {
    for (Slot& s : batch) {
      if (s.fatal) std::rethrow_exception(s.fatal);
      if (s.parsed && s.chat && !chat_logged_) {
        // Made again here when another rank encoded the record (prepare under mpirun): the same for the same input.
        const ChatFormat* made = encoder_ ? encoder_->chat() : nullptr;
        const ChatFormat chat = made ? *made : chat_format_parse(options_.chat_template, tok_);
        stats_.chat_template = chat.name();
        log0() << "chat format: " << chat.describe();
        chat_logged_ = true;
      }
      if (s.error) {
        try {
          std::rethrow_exception(s.error);
        } catch (const DataError& e) {  // a parse error carries its own hint naming the flag
          if (!options_.skip_bad_records) {
            if (!s.parsed) throw;
            throw DataError(e.what(), kSkipHint);
          }
          if (stats_.first_skipped.empty()) stats_.first_skipped = e.what();
          ++stats_.skipped;
        }
        continue;
      }
      ++stats_.records;
      packer_.add(s.doc);
      s.doc = {};
      if (progress_) progress_(s.done, total_);
    }
  }

  SourcesStats finish() {
    packer_.finish();
    if (progress_) progress_(total_, total_);
    stats_.pack = packer_.stats();
    return stats_;
  }

 private:
  static std::int32_t pad_id(const Tokenizer& tok) { return tok.pad_id().value_or(tok.eos_id().value_or(0)); }
  static PackOptions pack_options(const Tokenizer& tok, const SourcesOptions& options) {
    PackOptions pack;
    pack.seq_len = options.seq_len;
    pack.overflow = options.overflow;
    pack.pad_id = pad_id(tok);
    pack.fill_rows = options.fill_rows;
    return pack;
  }

  const Tokenizer& tok_;
  const SourcesOptions& options_;
  SourcesProgress progress_;
  std::uint64_t total_;
  const Encoder* encoder_;
  Packer packer_;
  SourcesStats stats_;
  bool chat_logged_ = false;
};

// A batch's size per tokenizing thread. One process turns batches of 256 KiB a thread: the first batch's read and the
// last one's pack are not overlapped, so the smaller the batch the shorter those ends (at 16 threads a 60 MB file
// makes 15 turns, where 1 MiB made 4). Under mpirun every turn is an exchange between ranks: 1 MiB a thread there.
constexpr std::uint64_t kBatchBytesPerThread = std::uint64_t{1} << 18,
                        kRankBatchBytesPerThread = std::uint64_t{1} << 20;
std::size_t batch_records(int threads, std::uint64_t bytes_per_thread) {
  return (bytes_per_thread >> 12) * static_cast<std::size_t>(std::max(threads, 1));  // 64 or 256 records a thread
}
std::uint64_t batch_bytes(int threads, std::uint64_t bytes_per_thread) {
  return bytes_per_thread * static_cast<std::uint64_t>(std::max(threads, 1));
}

}  // namespace

SourcesStats sources_pack(const std::vector<std::string>& paths, const Tokenizer& tok, const SourcesOptions& options,
                          const Packer::Sink& sink, const SourcesProgress& progress) {
  if (paths.empty()) throw DataError("no input files given", "set --data.path=FILE[,FILE...]");
  require_regular_files(paths);
  // Chosen at the first messages record: text-only data never needs a chat format, nor fails for want of one.
  Encoder encoder(tok, options);
  SlotPacker packer(tok, options, sink, progress, total_bytes(paths), &encoder);
  BatchReader reader(paths, options);

  // Records go in batches: parsed and tokenized on every thread (this one included) while this one reads the next
  // batch and the pack stage packs the previous one in file order and writes its rows, so that neither reading nor
  // HDF5 holds the tokenizing threads back. Three batches turn: one read, one encoded, one packed.
  std::array<std::vector<Slot>, 3> batches;
  // Declared after everything their threads touch: on an exception they are destroyed first, and join them.
  SerialStage pack_stage(1);
  WorkerPool pool(options.threads);
  const std::size_t max_records = batch_records(pool.threads(), kBatchBytesPerThread);
  const std::uint64_t max_bytes = batch_bytes(pool.threads(), kBatchBytesPerThread);
  auto start = [&](std::vector<Slot>& batch) {
    pool.start(batch.size(), [&batch, &encoder](std::size_t i) { encoder.encode(batch[i]); });
  };
  std::size_t cur = 0;
  reader.read(batches[cur], max_records, max_bytes);
  start(batches[cur]);
  while (!batches[cur].empty()) {
    // The batch read now was handed to the pack stage two turns ago, and packed before the last submit returned.
    std::vector<Slot>& next = batches[(cur + 1) % 3];
    reader.read(next, max_records, max_bytes);
    pool.wait();
    start(next);
    std::vector<Slot>& done = batches[cur];
    pack_stage.submit([&packer, &done] { packer.pack(done); });  // returns once the previous batch is packed
    cur = (cur + 1) % 3;
  }
  pool.wait();
  pack_stage.drain();
  return packer.finish();
}

// ---- prepare under mpirun: the encoded form of a batch ----
// A batch crosses ranks as bytes: per record a flag byte, the progress offset, then either the error (exit code,
// message, hint) or the document (count, ids, train flags). Native byte order: the ranks of one job share it.
namespace {

enum : std::uint8_t { kParsed = 1, kChat = 2, kError = 4, kFatal = 8 };

void put_raw(std::string& out, const void* p, std::size_t n) { out.append(static_cast<const char*>(p), n); }
template <class T>
void put(std::string& out, T v) {
  put_raw(out, &v, sizeof v);
}
void put_str(std::string& out, const std::string& s) {
  put<std::uint64_t>(out, s.size());
  out += s;
}
void put_error(std::string& out, const std::exception_ptr& e) {
  std::int32_t code = static_cast<std::int32_t>(ExitCode::internal);
  std::string what, hint;
  try {
    std::rethrow_exception(e);
  } catch (const Error& err) {
    code = static_cast<std::int32_t>(err.code());
    what = err.what();
    hint = err.hint();
  } catch (const std::exception& err) {
    what = err.what();
  }
  put(out, code);
  put_str(out, what);
  put_str(out, hint);
}

class Cursor {
 public:
  explicit Cursor(const std::string& s) : s_(s) {}
  bool done() const { return pos_ == s_.size(); }
  void get_raw(void* p, std::size_t n) {
    if (n > s_.size() - pos_) throw std::runtime_error("prepare: a rank's encoded batch is truncated");
    std::memcpy(p, s_.data() + pos_, n);
    pos_ += n;
  }
  template <class T>
  T get() {
    T v;
    get_raw(&v, sizeof v);
    return v;
  }
  std::string get_str() {
    std::string s(get<std::uint64_t>(), '\0');
    get_raw(s.data(), s.size());
    return s;
  }
  std::exception_ptr get_error(bool record) {
    const auto code = static_cast<ExitCode>(get<std::int32_t>());
    std::string what = get_str(), hint = get_str();
    // A record's error is always a DataError (Encoder catches nothing else), which the skip policy catches.
    if (record) return std::make_exception_ptr(DataError(what, std::move(hint)));
    return std::make_exception_ptr(Error(code, what, std::move(hint)));
  }

 private:
  const std::string& s_;
  std::size_t pos_ = 0;
};

std::string encode_batch(const std::vector<Slot>& batch) {
  std::string out;
  for (const Slot& s : batch) {
    const std::uint8_t flags = (s.parsed ? kParsed : 0) | (s.chat ? kChat : 0) | (s.error ? kError : 0) |
                               (s.fatal ? kFatal : 0);
    put(out, flags);
    put<std::uint64_t>(out, s.done);
    if (s.fatal) {
      put_error(out, s.fatal);
    } else if (s.error) {
      put_error(out, s.error);
    } else {
      put<std::uint64_t>(out, s.doc.ids.size());
      put_raw(out, s.doc.ids.data(), s.doc.ids.size() * sizeof(std::int32_t));
      put_raw(out, s.doc.train.data(), s.doc.train.size());
    }
  }
  return out;
}

std::vector<Slot> decode_batch(const std::string& bytes) {
  std::vector<Slot> batch;
  Cursor in(bytes);
  while (!in.done()) {
    Slot s;
    const auto flags = in.get<std::uint8_t>();
    s.done = in.get<std::uint64_t>();
    s.parsed = flags & kParsed;
    s.chat = flags & kChat;
    if (flags & kFatal) {
      s.fatal = in.get_error(false);
    } else if (flags & kError) {
      s.error = in.get_error(true);
    } else {
      const auto n = static_cast<std::size_t>(in.get<std::uint64_t>());
      s.doc.ids.resize(n);
      s.doc.train.resize(n);
      in.get_raw(s.doc.ids.data(), n * sizeof(std::int32_t));
      in.get_raw(s.doc.train.data(), n);
    }
    batch.push_back(std::move(s));
  }
  return batch;
}

}  // namespace

struct SourcesEncoder::Impl {
  Impl(const std::vector<std::string>& p, const Tokenizer& tok, const SourcesOptions& o, int r, int n, int bt)
      : paths(p),
        options(o),
        rank(r),
        ranks(n),
        batch_threads(bt),
        encoder(tok, options),
        reader(paths, options),
        pool(options.threads) {}
  std::vector<std::string> paths;
  SourcesOptions options;
  int rank, ranks, batch_threads;
  Encoder encoder;
  BatchReader reader;
  std::vector<Slot> mine, others;
  WorkerPool pool;  // last: destroyed first, joining the threads that touch the rest
};

SourcesEncoder::SourcesEncoder(const std::vector<std::string>& paths, const Tokenizer& tok,
                               const SourcesOptions& options, int rank, int ranks, int batch_threads) {
  if (paths.empty()) throw DataError("no input files given", "set --data.path=FILE[,FILE...]");
  if (ranks < 1 || rank < 0 || rank >= ranks) throw std::invalid_argument("SourcesEncoder: rank out of range");
  require_regular_files(paths);
  impl_ = std::make_unique<Impl>(paths, tok, options, rank, ranks, batch_threads);
}

SourcesEncoder::~SourcesEncoder() = default;

bool SourcesEncoder::next(std::string& encoded) {
  Impl& m = *impl_;
  const std::size_t max_records = batch_records(m.batch_threads, kRankBatchBytesPerThread);
  const std::uint64_t max_bytes = batch_bytes(m.batch_threads, kRankBatchBytesPerThread);
  bool any = false;
  m.mine.clear();
  for (int r = 0; r < m.ranks; ++r) {
    std::vector<Slot>& batch = r == m.rank ? m.mine : m.others;
    m.reader.read(batch, max_records, max_bytes);
    any = any || !batch.empty();
    if (batch.empty()) break;  // the files are done: so are the batches of the ranks after this one
  }
  m.others.clear();
  m.pool.run(m.mine.size(), [&m](std::size_t i) { m.encoder.encode(m.mine[i]); });
  encoded = encode_batch(m.mine);
  m.mine.clear();
  return any;
}

struct SourcesPacker::Impl {
  Impl(const Tokenizer& tok, const SourcesOptions& o, const Packer::Sink& sink, const SourcesProgress& progress,
       std::uint64_t total)
      : options(o), packer(tok, options, sink, progress, total) {}
  SourcesOptions options;
  SlotPacker packer;
};

SourcesPacker::SourcesPacker(const std::vector<std::string>& paths, const Tokenizer& tok, const SourcesOptions& options,
                             const Packer::Sink& sink, const SourcesProgress& progress)
    : impl_(std::make_unique<Impl>(tok, options, sink, progress, total_bytes(paths))) {}

SourcesPacker::~SourcesPacker() = default;

void SourcesPacker::add(const std::string& encoded) {
  std::vector<Slot> batch = decode_batch(encoded);
  impl_->packer.pack(batch);
}

SourcesStats SourcesPacker::finish() { return impl_->packer.finish(); }

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
