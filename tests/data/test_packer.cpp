// Packing on crafted documents: row layout, pre-shifted targets, masks, position resets, padding, truncate/split.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "ranktune/data/data_error.h"
#include "ranktune/data/packer.h"

namespace ranktune {
namespace {

constexpr std::int32_t X = kIgnoreTarget;

TokenizedDoc doc(std::vector<std::int32_t> ids, std::vector<std::uint8_t> train = {}) {
  if (train.empty()) train.assign(ids.size(), 1);
  return {std::move(ids), std::move(train)};
}

std::vector<PackedRow> pack(const std::vector<TokenizedDoc>& docs, PackOptions opt, PackStats* stats = nullptr) {
  std::vector<PackedRow> rows;
  Packer p(opt, [&](const PackedRow& r) { rows.push_back(r); });
  for (const auto& d : docs) p.add(d);
  p.finish();
  if (stats) *stats = p.stats();
  return rows;
}

TEST(Packer, TwoDocumentsShareARowWithResetPositionsAndNoCrossTargets) {
  PackStats st;
  const auto rows =
      pack({doc({1, 10, 11, 2}), doc({1, 20, 2})}, {.seq_len = 8, .overflow = Overflow::split, .pad_id = 0}, &st);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].input_ids, (std::vector<std::int32_t>{1, 10, 11, 2, 1, 20, 2, 0}));
  EXPECT_EQ(rows[0].targets, (std::vector<std::int32_t>{10, 11, 2, X, 20, 2, X, X}));
  EXPECT_EQ(rows[0].position_ids, (std::vector<std::int32_t>{0, 1, 2, 3, 0, 1, 2, 0}));
  EXPECT_EQ(row_documents(rows[0].position_ids), (std::vector<std::int32_t>{0, 0, 0, 0, 1, 1, 1, 2}));  // padding: 2
  EXPECT_EQ(st.rows, 1);
  EXPECT_EQ(st.tokens, 7);
  EXPECT_EQ(st.pad_tokens, 1);
  EXPECT_EQ(st.target_tokens, 5);
}

TEST(Packer, PromptTokensAreNeverTargets) {
  // bos, two prompt tokens, two reply tokens, eos: only the reply and eos are predicted.
  const auto rows = pack({doc({1, 5, 6, 7, 8, 2}, {0, 0, 0, 1, 1, 1})}, {.seq_len = 6});
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].targets, (std::vector<std::int32_t>{X, X, 7, 8, 2, X}));
}

TEST(Packer, ADocumentThatDoesNotFitStartsANewPaddedRow) {
  const auto rows = pack({doc({1, 2, 3, 4, 5}), doc({6, 7, 8, 9})}, {.seq_len = 6, .pad_id = 99});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].input_ids, (std::vector<std::int32_t>{1, 2, 3, 4, 5, 99}));
  EXPECT_EQ(rows[0].targets.back(), X);
  EXPECT_EQ(rows[1].input_ids, (std::vector<std::int32_t>{6, 7, 8, 9, 99, 99}));
  EXPECT_EQ(rows[1].position_ids, (std::vector<std::int32_t>{0, 1, 2, 3, 0, 1}));
  EXPECT_EQ(rows[1].targets, (std::vector<std::int32_t>{7, 8, 9, X, X, X}));
}

TEST(Packer, TruncateKeepsTheHeadAndCountsTheRest) {
  std::vector<std::int32_t> ids(20);
  for (int i = 0; i < 20; ++i) ids[i] = 100 + i;
  PackStats st;
  const auto rows = pack({doc(ids)}, {.seq_len = 8, .overflow = Overflow::truncate}, &st);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].input_ids, std::vector<std::int32_t>(ids.begin(), ids.begin() + 8));
  EXPECT_EQ(rows[0].targets.back(), X);
  EXPECT_EQ(st.truncated_documents, 1);
  EXPECT_EQ(st.truncated_tokens, 12);
}

TEST(Packer, SplitTrainsEveryTransitionExactlyOnce) {
  std::vector<std::int32_t> ids(20);
  for (int i = 0; i < 20; ++i) ids[i] = 100 + i;
  PackStats st;
  const auto rows = pack({doc(ids)}, {.seq_len = 8, .overflow = Overflow::split}, &st);
  EXPECT_EQ(st.split_documents, 1);
  EXPECT_EQ(st.split_pieces, 3);  // [0,8) [7,15) [14,20)
  std::map<std::pair<std::int32_t, std::int32_t>, int> seen;
  for (const auto& r : rows) {
    for (std::size_t t = 0; t < r.targets.size(); ++t) {
      if (r.targets[t] != X) ++seen[{r.input_ids[t], r.targets[t]}];
    }
  }
  ASSERT_EQ(seen.size(), 19u);
  for (int j = 1; j < 20; ++j) EXPECT_EQ((seen[{100 + j - 1, 100 + j}]), 1) << j;
}

TEST(Packer, FillRowsContinuesDocumentsAcrossRowsWithoutLosingTargets) {
  std::vector<TokenizedDoc> docs;
  std::int32_t next = 100;
  for (int d = 0; d < 7; ++d) {
    std::vector<std::int32_t> ids;
    for (int k = 0; k < 3 + (d * 4) % 9; ++k) ids.push_back(next++);
    docs.push_back(doc(ids));
  }
  PackStats st;
  const auto rows = pack(docs, {.seq_len = 6, .fill_rows = true}, &st);
  // At most one slot of padding before the last row: a single free slot could not hold a target.
  for (std::size_t r = 0; r + 1 < rows.size(); ++r) {
    EXPECT_LE(std::count(rows[r].input_ids.begin(), rows[r].input_ids.end(), 0), 1) << "row " << r;
  }
  // Ids are consecutive within a document, so the trained transitions must be exactly (k, k+1) inside each one.
  std::map<std::pair<std::int32_t, std::int32_t>, int> seen;
  for (const auto& r : rows) {
    for (std::size_t t = 0; t < r.targets.size(); ++t) {
      if (r.targets[t] != X) ++seen[{r.input_ids[t], r.targets[t]}];
    }
  }
  long want = 0;
  for (const auto& d : docs) {
    for (std::size_t k = 1; k < d.ids.size(); ++k, ++want) EXPECT_EQ((seen[{d.ids[k - 1], d.ids[k]}]), 1);
  }
  EXPECT_EQ(static_cast<long>(seen.size()), want);
  EXPECT_EQ(st.target_tokens, want);
  EXPECT_GT(st.split_documents, 0);
}

TEST(Packer, PositionIdsGiveADocumentAwareMask) {
  // i may attend to j iff i - position_ids[i] <= j <= i: exactly the earlier tokens of its own document; and
  // row_documents (what the trainer's mask is built from) gives i and j the same index iff they share a document.
  std::vector<TokenizedDoc> docs;
  std::vector<int> owner_of_id;
  for (int d = 0; d < 9; ++d) {
    std::vector<std::int32_t> ids;
    for (int k = 0; k < 1 + (d * 5) % 7; ++k) {
      ids.push_back(static_cast<std::int32_t>(owner_of_id.size()));
      owner_of_id.push_back(d);
    }
    docs.push_back(doc(ids));
  }
  for (bool fill : {false, true}) {
    for (const auto& r : pack(docs, {.seq_len = 10, .pad_id = -1, .fill_rows = fill})) {
      const std::vector<std::int32_t> doc_of = row_documents(r.position_ids);
      for (int i = 0; i < 10; ++i) {
        if (r.input_ids[i] < 0) continue;
        for (int j = 0; j <= i; ++j) {
          const bool same = r.input_ids[j] >= 0 && owner_of_id[r.input_ids[j]] == owner_of_id[r.input_ids[i]];
          EXPECT_EQ(i - r.position_ids[i] <= j, same) << "i " << i << " j " << j;
          EXPECT_EQ(doc_of[i] == doc_of[j], same) << "i " << i << " j " << j;
        }
      }
    }
  }
}

TEST(Packer, EmptyAndUntrainedDocumentsAreCounted) {
  PackStats st;
  pack({doc({}), doc({1, 2, 3}, {1, 0, 0})}, {.seq_len = 4}, &st);
  EXPECT_EQ(st.documents, 2);
  EXPECT_EQ(st.empty_documents, 1);
  EXPECT_EQ(st.untrained_documents, 1);
  EXPECT_NE(st.summary().find("2 documents -> 1 rows"), std::string::npos) << st.summary();
}

TEST(Packer, RefusesBadInput) {
  EXPECT_THROW(Packer({.seq_len = 1}, [](const PackedRow&) {}), DataError);
  Packer p({.seq_len = 4}, [](const PackedRow&) {});
  EXPECT_THROW(p.add(TokenizedDoc{{1, 2}, {1}}), DataError);
  EXPECT_EQ(overflow_parse("split"), Overflow::split);
  EXPECT_THROW(overflow_parse("wrap"), DataError);
  EXPECT_EQ(packing_attention_parse("isolated"), PackingAttention::isolated);
  EXPECT_EQ(packing_attention_parse("shared"), PackingAttention::shared);
  EXPECT_THROW(packing_attention_parse("none"), DataError);
}

}  // namespace
}  // namespace ranktune
