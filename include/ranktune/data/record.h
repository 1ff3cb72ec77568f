// defines: Record (one training example as read from a file), RecordReader (JSONL or plain text -> records, with
// malformed records either an error naming file and line or skipped and counted) and record_tokenize.
// JSONL keys: {"text": ...} | {"messages": [{"role", "content"}, ...]} | {"prompt": ..., "response": ...}.
#pragma once

#include <cstdint>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "ranktune/data/chat_template.h"
#include "ranktune/data/document.h"

namespace ranktune {

struct Record {
  enum class Kind { text, chat, prompt_response };
  Kind kind = Kind::text;
  std::string text;
  std::vector<ChatMessage> messages;
  std::string prompt, response;
  std::string where;  // "file:line", for messages about this record
};

// Parses one JSONL line. Throws DataError (prefixed with `where`) if it is not one of the three record shapes.
Record record_parse_json(const std::string& line, const std::string& where);

struct RecordReaderOptions {
  bool skip_malformed = false;  // false: a malformed record is an error; true: skipped, counted, first few logged
};

struct RecordStats {
  long lines = 0;
  long records = 0;
  long skipped = 0;           // malformed records skipped under skip_malformed
  std::uint64_t bytes = 0;    // of the file consumed so far (for progress)
  std::string first_skipped;  // the message of the first one, for the report
};

// One record as it stands in the file, not parsed yet: a JSONL line, or a paragraph of a text file.
struct RawRecord {
  std::string text;
  std::string where;  // "file:line"
  bool jsonl = false;
};

// RawRecord -> Record: record_parse_json of a JSONL line (and its DataError), a text record of a paragraph. Safe on
// any thread: `prepare` parses a batch of lines on all of them.
Record record_parse(RawRecord raw);

// A file read record by record. "*.jsonl" / "*.json": one JSON object per line (blank lines ignored). Any other
// file is plain text: one document per paragraph (paragraphs are separated by blank lines).
class RecordReader {
 public:
  RecordReader(std::string path, RecordReaderOptions options);
  std::optional<Record> next();
  // The next record unparsed; the caller parses it (record_parse) and counts the malformed ones itself.
  std::optional<RawRecord> next_raw();
  const RecordStats& stats() const { return stats_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  RecordReaderOptions options_;
  bool jsonl_;
  std::ifstream in_;
  RecordStats stats_;
};

// Tokens and loss mask of one record: text -> document_from_text, chat -> chat_encode(chat),
// prompt/response -> document_from_prompt_response. Errors are prefixed with the record's file:line.
TokenizedDoc record_tokenize(const Record& record, const Tokenizer& tok, const ChatFormat& chat);

}  // namespace ranktune
