// sources_pack: files -> rows as both `prepare` and `train` on text do it: truncate vs split counts, malformed and
// unencodable records as errors naming file:line (with the flag in the hint) or skipped and counted, prompt masking
// of chat records, several files in order, byte progress up to the total, and the same rows at any thread count
// and when ranks share the encoding (SourcesEncoder/SourcesPacker).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <utility>

#include "ranktune/data/byte_tokenizer.h"
#include "ranktune/data/data_error.h"
#include "ranktune/data/hf_tokenizer.h"
#include "ranktune/data/sources.h"
#include "support/scratch_dir.h"

namespace ranktune {
namespace {

using testing::HasSubstr;

// One packing's output: what the threaded and multi-rank packings must reproduce exactly.
struct Packing {
  SourcesStats stats;
  std::vector<PackedRow> rows;
  std::vector<std::uint64_t> progress;
  std::string error;
};

// Rows (ids, targets, positions), record counts, the first skipped record, token counts and progress all equal.
void expect_same_output(const Packing& got, const Packing& ref, const std::string& what) {
  ASSERT_EQ(got.rows.size(), ref.rows.size()) << what;
  for (std::size_t i = 0; i < ref.rows.size(); ++i) {
    ASSERT_EQ(got.rows[i].input_ids, ref.rows[i].input_ids) << "row " << i << ", " << what;
    ASSERT_EQ(got.rows[i].targets, ref.rows[i].targets) << "row " << i;
    ASSERT_EQ(got.rows[i].position_ids, ref.rows[i].position_ids) << "row " << i;
  }
  EXPECT_EQ(got.stats.records, ref.stats.records);
  EXPECT_EQ(got.stats.skipped, ref.stats.skipped);
  EXPECT_EQ(got.stats.first_skipped, ref.stats.first_skipped);
  EXPECT_EQ(got.stats.pack.tokens, ref.stats.pack.tokens);
  EXPECT_EQ(got.stats.pack.target_tokens, ref.stats.pack.target_tokens);
  EXPECT_EQ(got.progress, ref.progress);
}

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

// prepare.threads: records parsed and tokenized in batches on several threads give the rows, counts, skipped records
// and progress of one thread. The llama3 fixture's BPE (its word caches are per thread) on its own test lines, with
// malformed and unencodable records, chat and prompt/response records among them, over several batches.
TEST_F(SourcesTest, ThreadsGiveTheRowsOfOneThread) {
  const std::string dir = std::string(RANKTUNE_SOURCE_DIR) + "/tests/reference/fixtures/tokenizers/";
  std::ifstream cases(dir + "llama3.cases.jsonl");
  std::vector<std::string> lines;
  for (std::string line; std::getline(cases, line);) lines.push_back(line);
  ASSERT_GT(lines.size(), 100u);
  std::string text;
  for (int n = 0; n < 3000; ++n) {
    text += lines[static_cast<std::size_t>(n) % lines.size()] + "\n";
    if (n % 97 == 5) text += "{oops\n";
    if (n % 89 == 7) text += std::string(R"({"messages": [{"role": "robot", "content": "x"}]})") + "\n";
    if (n % 31 == 3) {
      text += R"({"messages": [{"role": "user", "content": "Où est-il? )" + std::to_string(n) +
              R"("}, {"role": "assistant", "content": "Ici, 123456 fois."}]})" + "\n";
    }
    if (n % 43 == 1) text += std::string(R"({"prompt": "Q: 1+1?\n", "response": "A: 2 — sûr"})") + "\n";
  }
  const std::string path = write("mixed.jsonl", text);
  const auto tok = hf_tokenizer_load(dir + "llama3.tokenizer.json");

  auto run = [&](int threads, bool skip) {
    Packing r;
    SourcesOptions o;
    o.seq_len = 64;
    o.skip_bad_records = skip;
    o.chat_template = "llama3";
    o.threads = threads;
    try {
      r.stats = sources_pack(
          {path}, *tok, o, [&](const PackedRow& row) { r.rows.push_back(row); },
          [&](std::uint64_t done, std::uint64_t) { r.progress.push_back(done); });
    } catch (const DataError& e) {
      r.error = std::string(e.what()) + " | " + e.hint();
    }
    return r;
  };
  const Packing one = run(1, true);
  EXPECT_GT(one.stats.skipped, 60);
  EXPECT_GT(one.rows.size(), 1000u);
  EXPECT_EQ(one.stats.chat_template, "llama3");
  for (int threads : {2, 4, 7}) {
    const Packing many = run(threads, true);
    ASSERT_NO_FATAL_FAILURE(expect_same_output(many, one, std::to_string(threads) + " threads"));
  }
  // Without skipping, the first bad record in file order is the error, whichever thread met it.
  const Packing strict = run(1, false);
  EXPECT_THAT(strict.error, HasSubstr(path + ":9:"));  // the first "{oops"
  EXPECT_EQ(run(4, false).error, strict.error);
}

// prepare under mpirun, its ranks played here in one process: each SourcesEncoder reads every record and encodes its
// rank's batches, the packer takes the encoded batches in rank order; rows, counts, skips, progress and the strict
// error are those of sources_pack, whatever the ranks and threads (the batch size follows batch_threads only).
TEST_F(SourcesTest, RanksGiveTheRowsOfOneProcess) {
  const std::string dir = std::string(RANKTUNE_SOURCE_DIR) + "/tests/reference/fixtures/tokenizers/";
  std::ifstream cases(dir + "llama3.cases.jsonl");
  std::vector<std::string> lines;
  for (std::string line; std::getline(cases, line);) lines.push_back(line);
  ASSERT_GT(lines.size(), 100u);
  std::string text;
  for (int n = 0; n < 1400; ++n) {
    text += lines[static_cast<std::size_t>(n) % lines.size()] + "\n";
    // From line 300 on: the first bad record, and the first chat record (whose chat format the packer then makes
    // itself), are in batch 1 of 256 records, encoded by rank 1.
    if (n >= 300 && n % 97 == 60) text += "{oops\n";
    if (n >= 300 && n % 89 == 7) text += std::string(R"({"messages": [{"role": "robot", "content": "x"}]})") + "\n";
    if (n >= 300 && n % 131 == 100) {
      text += R"({"messages": [{"role": "user", "content": "Où? )" + std::to_string(n) +
              R"("}, {"role": "assistant", "content": "Ici."}]})" + "\n";
    }
  }
  const std::string a = write("mixed.jsonl", text);
  const std::string b = write("notes.txt", "first paragraph\n\nsecond one\n\n" + std::string(300, 'z') + "\n");
  const auto tok = hf_tokenizer_load(dir + "llama3.tokenizer.json");

  auto options = [](bool skip, int threads) {
    SourcesOptions o;
    o.seq_len = 64;
    o.skip_bad_records = skip;
    o.chat_template = "llama3";
    o.threads = threads;
    return o;
  };
  auto one = [&](bool skip) {
    Packing r;
    try {
      r.stats = sources_pack(
          {a, b}, *tok, options(skip, 1), [&](const PackedRow& row) { r.rows.push_back(row); },
          [&](std::uint64_t done, std::uint64_t) { r.progress.push_back(done); });
    } catch (const DataError& e) {
      r.error = std::string(e.what()) + " | " + e.hint();
    }
    return r;
  };
  auto ranks = [&](bool skip, int n, int threads) {
    Packing r;
    const SourcesOptions o = options(skip, threads);
    try {
      std::vector<std::unique_ptr<SourcesEncoder>> encoders;
      // batch_threads 0 gives batches of 256 records: several rounds, each rank's batch meets bad records.
      for (int rank = 0; rank < n; ++rank)
        encoders.push_back(std::make_unique<SourcesEncoder>(std::vector<std::string>{a, b}, *tok, o, rank, n, 0));
      SourcesPacker packer(
          {a, b}, *tok, o, [&](const PackedRow& row) { r.rows.push_back(row); },
          [&](std::uint64_t done, std::uint64_t) { r.progress.push_back(done); });
      for (bool more = true; more;) {
        more = false;
        std::vector<std::string> parts(static_cast<std::size_t>(n));
        for (int rank = 0; rank < n; ++rank) more = encoders[rank]->next(parts[rank]) || more;
        for (const std::string& part : parts) packer.add(part);
      }
      r.stats = packer.finish();
    } catch (const DataError& e) {
      r.error = std::string(e.what()) + " | " + e.hint();
    }
    return r;
  };
  const Packing ref = one(true);
  EXPECT_GT(ref.stats.skipped, 20);
  EXPECT_EQ(ref.stats.first_skipped.rfind(a + ":353:", 0), 0u) << ref.stats.first_skipped;
  EXPECT_GT(ref.rows.size(), 300u);
  EXPECT_EQ(ref.stats.chat_template, "llama3");
  for (const auto& [n, threads] : std::vector<std::pair<int, int>>{{1, 1}, {2, 1}, {3, 2}, {5, 1}}) {
    const Packing got = ranks(true, n, threads);
    ASSERT_EQ(got.error, "") << n << " ranks";
    ASSERT_NO_FATAL_FAILURE(expect_same_output(got, ref, std::to_string(n) + " ranks"));
    EXPECT_EQ(got.stats.chat_template, ref.stats.chat_template);
  }
  // Without skipping, the first bad record in file order is the error, whichever rank encoded it.
  const Packing strict = one(false);
  EXPECT_THAT(strict.error, HasSubstr(a + ":353:"));
  for (int n : {2, 3}) EXPECT_EQ(ranks(false, n, 1).error, strict.error) << n << " ranks";
}

TEST(SourcesSplit, CommaListsAndEmptyItems) {
  EXPECT_EQ(sources_split("a.jsonl"), (std::vector<std::string>{"a.jsonl"}));
  EXPECT_EQ(sources_split("a.jsonl,b.txt"), (std::vector<std::string>{"a.jsonl", "b.txt"}));
  EXPECT_THROW(sources_split("a,,b"), DataError);
  EXPECT_THROW(sources_split(""), DataError);
}

}  // namespace
}  // namespace ranktune
