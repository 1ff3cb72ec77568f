// JSONL/text records: strict parsing (unknown shapes are errors, not guesses), locations in every message.
#include "ranktune/data/record.h"

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "ranktune/data/data_error.h"

namespace ranktune {
namespace {

using json = nlohmann::json;

[[noreturn]] void bad(const std::string& where, const std::string& what) {
  throw DataError(
      where + ": " + what,
      "each line must be {\"text\": ...}, {\"messages\": [{\"role\": ..., \"content\": ...}]} or "
      "{\"prompt\": ..., \"response\": ...}; or pass --data.on_bad_record=skip to skip and count bad lines");
}

// Keeps what a message echoes from a record short: a 50 MB line would otherwise become a 50 MB error message.
std::string shorten(const std::string& s, std::size_t max) {
  if (s.size() <= max) return s;
  std::size_t head = max / 2;
  std::size_t tail = s.size() - max / 2;
  // Cut between UTF-8 characters, never inside one.
  while (head > 0 && (static_cast<unsigned char>(s[head]) & 0xC0) == 0x80) --head;
  while (tail < s.size() && (static_cast<unsigned char>(s[tail]) & 0xC0) == 0x80) ++tail;
  return s.substr(0, head) + "..." + s.substr(tail);
}

// The JSON parser quotes the whole lexeme it failed on ("last read: '...'", or "number overflow parsing '...'"),
// which for an unterminated string is the rest of the line; the lexeme is shortened and the rest of the message
// (what went wrong, what was expected) kept.
std::string parser_message(const std::string& msg) {
  constexpr std::size_t kMaxQuoted = 200;
  std::size_t begin = std::string::npos;
  for (const std::string open : {"last read: '", "parsing '"}) {
    if (const std::size_t a = msg.find(open); a != std::string::npos) {
      begin = a + open.size();
      break;
    }
  }
  std::size_t end = msg.rfind("'; expected ");
  if (end == std::string::npos && !msg.empty() && msg.back() == '\'') end = msg.size() - 1;
  if (begin == std::string::npos || end == std::string::npos || end < begin) return shorten(msg, kMaxQuoted + 100);
  return shorten(msg.substr(0, begin) + shorten(msg.substr(begin, end - begin), kMaxQuoted) + msg.substr(end),
                 kMaxQuoted + 200);
}

std::string need_string(const json& obj, const char* key, const std::string& where) {
  const json& v = obj.at(key);
  if (!v.is_string()) bad(where, std::string("\"") + key + "\" must be a string, got " + v.type_name());
  return v.get<std::string>();
}

}  // namespace

Record record_parse_json(const std::string& line, const std::string& where) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number that overflows a double
    bad(where, "not valid JSON (" + parser_message(e.what()) + ")");
  }
  if (!j.is_object()) bad(where, std::string("expected a JSON object, got ") + j.type_name());
  Record r;
  r.where = where;
  const int shapes = int(j.contains("text")) + int(j.contains("messages")) + int(j.contains("prompt"));
  if (shapes != 1)
    bad(where, shapes == 0 ? "no \"text\", \"messages\" or \"prompt\" key" : "more than one record kind");
  if (j.contains("text")) {
    r.kind = Record::Kind::text;
    r.text = need_string(j, "text", where);
  } else if (j.contains("prompt")) {
    if (!j.contains("response")) bad(where, "\"prompt\" without \"response\"");
    r.kind = Record::Kind::prompt_response;
    r.prompt = need_string(j, "prompt", where);
    r.response = need_string(j, "response", where);
  } else {
    const json& m = j.at("messages");
    if (!m.is_array() || m.empty()) bad(where, "\"messages\" must be a non-empty array");
    r.kind = Record::Kind::chat;
    for (std::size_t i = 0; i < m.size(); ++i) {
      const std::string at = where + " message " + std::to_string(i);
      if (!m[i].is_object() || !m[i].contains("role") || !m[i].contains("content")) {
        bad(where, "message " + std::to_string(i) + " needs \"role\" and \"content\"");
      }
      r.messages.push_back({need_string(m[i], "role", at), need_string(m[i], "content", at)});
    }
  }
  return r;
}

RecordReader::RecordReader(std::string path, RecordReaderOptions options)
    : path_(std::move(path)),
      options_(options),
      jsonl_(path_.ends_with(".jsonl") || path_.ends_with(".json")),
      in_(path_, std::ios::binary) {
  if (!in_) throw DataError("cannot open " + path_ + ": " + std::strerror(errno));
}

Record record_parse(RawRecord raw) {
  if (raw.jsonl) return record_parse_json(raw.text, raw.where);
  Record r;
  r.text = std::move(raw.text);
  r.where = std::move(raw.where);
  return r;
}

std::optional<RawRecord> RecordReader::next_raw() {
  std::string line;
  if (!jsonl_) {
    RawRecord r;
    long first_line = 0;
    while (std::getline(in_, line)) {
      ++stats_.lines;
      stats_.bytes += line.size() + 1;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      const bool blank = line.find_first_not_of(" \t") == std::string::npos;
      if (blank) {
        if (first_line) break;
        continue;
      }
      if (!first_line) first_line = stats_.lines;
      if (!r.text.empty()) r.text += '\n';
      r.text += line;
    }
    if (!first_line) return std::nullopt;
    r.where = path_ + ":" + std::to_string(first_line);
    return r;
  }
  while (std::getline(in_, line)) {
    ++stats_.lines;
    stats_.bytes += line.size() + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    return RawRecord{std::move(line), path_ + ":" + std::to_string(stats_.lines), true};
  }
  return std::nullopt;
}

std::optional<Record> RecordReader::next() {
  while (std::optional<RawRecord> raw = next_raw()) {
    try {
      Record r = record_parse(std::move(*raw));
      ++stats_.records;
      return r;
    } catch (const DataError& e) {
      if (!options_.skip_malformed) throw;
      if (stats_.skipped++ == 0) stats_.first_skipped = e.what();
    }
  }
  return std::nullopt;
}

TokenizedDoc record_tokenize(const Record& record, const Tokenizer& tok, const ChatFormat& chat) {
  try {
    switch (record.kind) {
      case Record::Kind::text: return document_from_text(tok, record.text);
      case Record::Kind::chat: return chat_encode(tok, chat, record.messages);
      case Record::Kind::prompt_response: return document_from_prompt_response(tok, record.prompt, record.response);
    }
  } catch (const DataError& e) {
    throw DataError(record.where + ": " + shorten(e.what(), 400), e.hint());
  }
  return {};
}

}  // namespace ranktune
