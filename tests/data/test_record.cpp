// JSONL and text records: the three shapes, malformed lines as errors naming file:line or skipped and counted,
// paragraphs of text files, and tokenization with record locations in errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "ranktune/data/byte_tokenizer.h"
#include "ranktune/data/data_error.h"
#include "ranktune/data/record.h"
#include "support/scratch_dir.h"

namespace ranktune {
namespace {

using testing::HasSubstr;

class RecordTest : public testing::Test {
 protected:
  std::string write(const std::string& name, const std::string& text) {
    const std::string path = dir_ / name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  static std::vector<Record> read_all(RecordReader& r) {
    std::vector<Record> out;
    while (auto rec = r.next()) out.push_back(*rec);
    return out;
  }
  test::ScratchDir dir_{"rec_" + test::test_name()};
};

TEST_F(RecordTest, ReadsTheThreeShapes) {
  const std::string path = write("ok.jsonl",
                                 "{\"text\": \"hello\"}\n"
                                 "\n"
                                 "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, "
                                 "{\"role\": \"assistant\", \"content\": \"yo\"}]}\n"
                                 "{\"prompt\": \"Q: \", \"response\": \"A\", \"id\": 3}\n");
  RecordReader reader(path, {});
  const auto recs = read_all(reader);
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[0].kind, Record::Kind::text);
  EXPECT_EQ(recs[0].text, "hello");
  EXPECT_EQ(recs[1].kind, Record::Kind::chat);
  ASSERT_EQ(recs[1].messages.size(), 2u);
  EXPECT_EQ(recs[1].messages[1].content, "yo");
  EXPECT_EQ(recs[1].where, path + ":3");
  EXPECT_EQ(recs[2].kind, Record::Kind::prompt_response);
  EXPECT_EQ(recs[2].response, "A");
  EXPECT_EQ(reader.stats().lines, 4);
  EXPECT_EQ(reader.stats().records, 3);
}

TEST_F(RecordTest, MalformedLineIsAnErrorNamingFileAndLine) {
  const std::string path = write("bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": 5}\n");
  RecordReader reader(path, {});
  ASSERT_TRUE(reader.next());
  try {
    reader.next();
    FAIL();
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr(path + ":2"));
    EXPECT_THAT(e.what(), HasSubstr("\"text\" must be a string"));
  }
}

TEST_F(RecordTest, EachKindOfMalformedRecordIsRefused) {
  for (const char* line : {"not json", "[1, 2]", "{\"txt\": \"x\"}", "{\"text\": \"a\", \"prompt\": \"b\"}",
                           "{\"prompt\": \"p\"}", "{\"messages\": []}", "{\"messages\": [{\"role\": \"user\"}]}",
                           "{\"messages\": [{\"role\": \"user\", \"content\": 1}]}"}) {
    EXPECT_THROW(record_parse_json(line, "f:1"), DataError) << line;
  }
}

TEST_F(RecordTest, SkipMalformedCountsAndKeepsGoing) {
  const std::string path = write("mixed.jsonl", "{\"text\": \"a\"}\n{oops\n{\"text\": \"b\"}\n[]\n");
  RecordReader reader(path, {.skip_malformed = true});
  const auto recs = read_all(reader);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[1].text, "b");
  EXPECT_EQ(reader.stats().skipped, 2);
  EXPECT_THAT(reader.stats().first_skipped, HasSubstr(path + ":2"));
}

TEST_F(RecordTest, TextFilesAreParagraphs) {
  const std::string path = write("book.txt", "first line\nsecond line\n\n\n  \nnext paragraph\r\n");
  RecordReader reader(path, {});
  const auto recs = read_all(reader);
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0].text, "first line\nsecond line");
  EXPECT_EQ(recs[1].text, "next paragraph");
  EXPECT_EQ(recs[1].where, path + ":6");
}

TEST_F(RecordTest, TokenizeErrorsNameTheRecord) {
  ByteTokenizer tok;
  Record r = record_parse_json(R"({"messages": [{"role": "bot", "content": "x"}]})", "data.jsonl:7");
  try {
    record_tokenize(r, tok, ChatFamily::plain);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_THAT(e.what(), HasSubstr("data.jsonl:7"));
    EXPECT_THAT(e.what(), HasSubstr("role 'bot'"));
  }
  const TokenizedDoc d = record_tokenize(record_parse_json(R"({"text": "ab"})", "x:1"), tok, ChatFamily::plain);
  EXPECT_EQ(d.ids.size(), 4u);
}

TEST_F(RecordTest, MissingFileIsAnError) { EXPECT_THROW(RecordReader("/nonexistent/x.jsonl", {}), DataError); }

}  // namespace
}  // namespace ranktune
