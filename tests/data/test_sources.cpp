// sources_pack: files -> rows as both `prepare` and `train` on text do it: truncate vs split counts, malformed and
// unencodable records as errors naming file:line (with the flag in the hint) or skipped and counted, prompt masking
// of chat records, several files in order, byte progress up to the total.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "ranktune/data/byte_tokenizer.h"
#include "ranktune/data/data_error.h"
#include "ranktune/data/sources.h"
#include "support/scratch_dir.h"

namespace ranktune {
namespace {

using testing::HasSubstr;

class SourcesTest : public testing::Test {
 protected:
  std::string write(const std::string& name, const std::string& text) {
    const std::string path = dir_ / name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  SourcesStats pack(const std::vector<std::string>& paths, SourcesOptions o, std::vector<PackedRow>* rows = nullptr) {
    return sources_pack(paths, tok_, o, [rows](const PackedRow& r) {
      if (rows) rows->push_back(r);
    });
  }
  ByteTokenizer tok_;
  test::ScratchDir dir_{"src_" + test::test_name()};
};

TEST_F(SourcesTest, OverlongDocumentsAreTruncatedOrSplitAndCounted) {
  // 40 bytes + bos + eos = 42 tokens in rows of 16; the short one fits.
  const std::string path = write("long.jsonl", "{\"text\": \"" + std::string(40, 'a') + "\"}\n{\"text\": \"hi\"}\n");
  SourcesOptions o;
  o.seq_len = 16;
  o.overflow = Overflow::truncate;
  const SourcesStats t = pack({path}, o);
  EXPECT_EQ(t.pack.truncated_documents, 1);
  EXPECT_EQ(t.pack.truncated_tokens, 42 - 16);
  EXPECT_EQ(t.pack.split_documents, 0);
  o.overflow = Overflow::split;
  const SourcesStats s = pack({path}, o);
  EXPECT_EQ(s.pack.truncated_documents, 0);
  EXPECT_EQ(s.pack.split_documents, 1);
  EXPECT_EQ(s.pack.split_pieces, 3);  // pieces of 16 overlapping by one: 16 + 15 + 11 tokens cover 42
  EXPECT_EQ(s.pack.target_tokens, 41 + 3);
  EXPECT_EQ(s.records, 2);
}

TEST_F(SourcesTest, MalformedRecordIsAnErrorNamingFileLineAndTheFlag) {
  const std::string path = write("bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": \n");
  try {
    pack({path}, SourcesOptions{});
    FAIL() << "no error";
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr(path + ":2"));
    EXPECT_THAT(e.hint(), HasSubstr("--data.on_bad_record=skip"));
  }
}

TEST_F(SourcesTest, UnencodableRecordIsAnErrorNamingFileLine) {
  const std::string path = write("role.jsonl", "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}\n");
  try {
    pack({path}, SourcesOptions{});
    FAIL() << "no error";
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr(path + ":1"));
    EXPECT_THAT(e.hint(), HasSubstr("--data.on_bad_record=skip"));
  }
}

TEST_F(SourcesTest, SkipCountsMalformedAndUnencodableRecords) {
  const std::string path = write("mixed.jsonl",
                                 "{\"text\": \"one\"}\n{oops\n"
                                 "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}\n"
                                 "[]\n{\"prompt\": \"Q: \", \"response\": \"A\"}\n");
  SourcesOptions o;
  o.skip_bad_records = true;
  const SourcesStats st = pack({path}, o);
  EXPECT_EQ(st.records, 2);
  EXPECT_EQ(st.skipped, 3);
  EXPECT_THAT(st.first_skipped, HasSubstr(path + ":"));
  EXPECT_EQ(st.pack.documents, 2);
}

TEST_F(SourcesTest, ChatPromptTokensAreMaskedAndRepliesTrained) {
  const std::string path = write(
      "chat.jsonl",
      "{\"messages\": [{\"role\": \"user\", \"content\": \"2+2?\"}, {\"role\": \"assistant\", \"content\": \"4\"}]}\n");
  std::vector<PackedRow> rows;
  SourcesOptions o;
  o.seq_len = 64;
  const SourcesStats st = pack({path}, o, &rows);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(st.chat_template, "plain");
  const auto& r = rows[0];
  // Trained targets are exactly the reply "4" and what ends it; everything before is context.
  std::vector<std::int32_t> trained;
  for (auto t : r.targets)
    if (t != kIgnoreTarget) trained.push_back(t);
  ASSERT_GE(trained.size(), 2u);
  EXPECT_EQ(trained[0], '4');
  EXPECT_EQ(trained[1], ByteTokenizer::kEos);
  EXPECT_EQ(r.targets[0], kIgnoreTarget);
}

TEST_F(SourcesTest, FilesAreReadInOrderAndProgressReachesTheTotal) {
  const std::string a = write("a.txt", "first\n\nsecond\n");
  const std::string b = write("b.jsonl", "{\"text\": \"third\"}\n");
  std::vector<PackedRow> rows;
  std::uint64_t last_done = 0, last_total = 0;
  SourcesOptions o;
  o.seq_len = 8;
  sources_pack(
      {a, b}, tok_, o, [&](const PackedRow& r) { rows.push_back(r); },
      [&](std::uint64_t done, std::uint64_t total) {
        EXPECT_GE(done, last_done);
        last_done = done;
        last_total = total;
      });
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].input_ids[1], 'f');
  EXPECT_EQ(rows[2].input_ids[1], 't');
  EXPECT_EQ(last_total, std::filesystem::file_size(a) + std::filesystem::file_size(b));
  EXPECT_EQ(last_done, last_total);
}

TEST(SourcesSplit, CommaListsAndEmptyItems) {
  EXPECT_EQ(sources_split("a.jsonl"), (std::vector<std::string>{"a.jsonl"}));
  EXPECT_EQ(sources_split("a.jsonl,b.txt"), (std::vector<std::string>{"a.jsonl", "b.txt"}));
  EXPECT_THROW(sources_split("a,,b"), DataError);
  EXPECT_THROW(sources_split(""), DataError);
}

}  // namespace
}  // namespace ranktune
