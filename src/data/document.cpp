// Segment encoding with the prefix rule, and the two simple document kinds.
#include "ranktune/data/document.h"

#include <algorithm>

namespace ranktune {
namespace {

void append(TokenizedDoc& doc, const std::vector<std::int32_t>& ids, std::size_t from, std::size_t to, bool train) {
  doc.ids.insert(doc.ids.end(), ids.begin() + static_cast<std::ptrdiff_t>(from),
                 ids.begin() + static_cast<std::ptrdiff_t>(to));
  doc.train.insert(doc.train.end(), to - from, train ? 1 : 0);
}

// Text segments [first, last) encoded as one string; each segment's tokens start where the encoding of the text
// before it stops being a prefix of the whole.
void encode_run(const Tokenizer& tok, const std::vector<Segment>& segs, std::size_t first, std::size_t last,
                TokenizedDoc& doc) {
  std::string text;
  for (std::size_t i = first; i < last; ++i) text += segs[i].text;
  auto encode = [&](std::string_view t) { return first == 0 ? tok.encode(t, false) : tok.encode_continuation(t); };
  const std::vector<std::int32_t> ids = encode(text);
  std::size_t prefix_chars = 0, done = 0;
  for (std::size_t i = first; i < last; ++i) {
    prefix_chars += segs[i].text.size();
    std::size_t end = ids.size();
    if (i + 1 < last) {
      const std::vector<std::int32_t> head = encode(std::string_view(text).substr(0, prefix_chars));
      end = static_cast<std::size_t>(std::mismatch(head.begin(), head.end(), ids.begin(), ids.end()).first -
                                     head.begin());
      end = std::max(end, done);
    }
    append(doc, ids, done, end, segs[i].train);
    done = end;
  }
}

}  // namespace

TokenizedDoc encode_segments(const Tokenizer& tok, const std::vector<Segment>& segments) {
  TokenizedDoc doc;
  for (std::size_t i = 0; i < segments.size();) {
    if (segments[i].token >= 0) {
      doc.ids.push_back(segments[i].token);
      doc.train.push_back(segments[i].train ? 1 : 0);
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < segments.size() && segments[j].token < 0) ++j;
    encode_run(tok, segments, i, j, doc);
    i = j;
  }
  return doc;
}

TokenizedDoc document_from_text(const Tokenizer& tok, std::string_view text) {
  TokenizedDoc doc;
  doc.ids = tok.encode(text, true);
  if (tok.eos_id() && (doc.ids.empty() || doc.ids.back() != *tok.eos_id())) doc.ids.push_back(*tok.eos_id());
  doc.train.assign(doc.ids.size(), 1);
  return doc;
}

TokenizedDoc document_from_prompt_response(const Tokenizer& tok, std::string_view prompt, std::string_view response) {
  std::vector<Segment> segs;
  if (tok.bos_id()) segs.push_back({{}, *tok.bos_id(), false});
  segs.push_back({std::string(prompt), -1, false});
  segs.push_back({std::string(response), -1, true});
  if (tok.eos_id()) segs.push_back({{}, *tok.eos_id(), true});
  return encode_segments(tok, segs);
}

}  // namespace ranktune
