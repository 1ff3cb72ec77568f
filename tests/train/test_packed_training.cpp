// Training on packed rows through the trainer's own path (Packer -> RowStore -> batch_tensors -> forward -> summed
// token loss -> backward, and the balanced pipeline): with data.packing_attention = isolated the loss and gradients of
// a batch of packed rows equal those of its documents trained one by one, each alone in its own sequence; shared
// attention gives another loss; rows of one document leave attention on the mask-free path.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <iomanip>
#include <map>
#include <string>
#include <vector>

#include "ranktune/data/packer.h"
#include "ranktune/io/row_store.h"
#include "ranktune/train/pipeline.h"
#include "ranktune/train/token_data.h"
#include "train/pipeline_test_util.h"

namespace ranktune {
namespace {

const at::Device kCpu(at::kCPU);

// Documents of 3 to 11 tokens from a vocabulary of 97; every third has an untrained prompt of 2 tokens.
std::vector<TokenizedDoc> documents(int n) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  std::vector<TokenizedDoc> docs;
  for (int d = 0; d < n; ++d) {
    const int len = 3 + static_cast<int>(at::randint(9, {1}, gen).item<std::int64_t>());
    TokenizedDoc doc;
    for (int i = 0; i < len; ++i) {
      doc.ids.push_back(static_cast<std::int32_t>(at::randint(3, 97, {1}, gen).item<std::int64_t>()));
      doc.train.push_back(d % 3 == 2 && i < 2 ? 0 : 1);
    }
    docs.push_back(doc);
  }
  return docs;
}

std::vector<PackedRow> pack(const std::vector<TokenizedDoc>& docs, int seq_len) {
  std::vector<PackedRow> rows;
  Packer packer({.seq_len = seq_len, .pad_id = 0}, [&](const PackedRow& r) { rows.push_back(r); });
  for (const auto& d : docs) packer.add(d);
  packer.finish();
  return rows;
}

std::vector<std::int64_t> all_rows(const RowStore& store) {
  std::vector<std::int64_t> idx(store.size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<std::int64_t>(i);
  return idx;
}

// Loss sum of the packed batch (gradients accumulate in the model).
double packed_step(LlamaImpl& m, const BatchTensors& bt) {
  const at::Tensor sum = token_loss_sum(m.forward(bt.tokens, bt.positions, bt.documents), bt.targets);
  sum.backward();
  return sum.item<double>();
}

// Each document alone as a sequence of its own length: positions 0.., no mask, its own pre-shifted targets.
double alone_step(LlamaImpl& m, const std::vector<TokenizedDoc>& docs) {
  double total = 0;
  for (const auto& d : docs) {
    const auto n = static_cast<std::int64_t>(d.ids.size());
    at::Tensor tok = at::empty({1, n}, at::kLong), tgt = at::full({1, n}, kIgnoreIndex, at::kLong);
    auto* tp = tok.data_ptr<std::int64_t>();
    auto* gp = tgt.data_ptr<std::int64_t>();
    for (std::int64_t i = 0; i < n; ++i) {
      tp[i] = d.ids[i];
      if (i + 1 < n && d.train[i + 1]) gp[i] = d.ids[i + 1];
    }
    const at::Tensor sum = token_loss_sum(m.forward(tok), tgt);
    sum.backward();
    total += sum.item<double>();
  }
  return total;
}

TEST(PackedTraining, RowDocumentsFollowPositionResets) {
  const auto rows = pack(documents(12), 24);
  ASSERT_GE(rows.size(), 3u);
  const RowStore store(rows);
  const BatchTensors bt = batch_tensors(store, all_rows(store), kCpu, PackingAttention::isolated);
  ASSERT_TRUE(bt.documents.defined());
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const std::vector<std::int32_t> want = row_documents(rows[r].position_ids);
    for (std::size_t t = 0; t < want.size(); ++t)
      ASSERT_EQ(bt.documents[static_cast<std::int64_t>(r)][static_cast<std::int64_t>(t)].item<std::int64_t>(), want[t]);
  }
  EXPECT_FALSE(batch_tensors(store, all_rows(store), kCpu, PackingAttention::shared).documents.defined());
}

TEST(PackedTraining, IsolatedLossAndGradientsEqualDocumentsTrainedAlone) {
  const auto docs = documents(12);
  const RowStore store(pack(docs, 24));
  const BatchTensors bt = batch_tensors(store, all_rows(store), kCpu, PackingAttention::isolated);
  ASSERT_TRUE(bt.documents.defined());
  const at::TensorOptions cpu = at::TensorOptions().dtype(at::kFloat);
  Llama packed = test::make_model(false, 0, cpu), alone = test::make_model(false, 0, cpu);
  const double got = packed_step(*packed, bt), want = alone_step(*alone, docs);
  EXPECT_NEAR(got, want, 1e-6 * want);
  test::expect_same_grads(test::grads_of(*packed), test::grads_of(*alone), 1e-5);

  // shared: earlier documents are attended to, and the loss shows it (by 20 times the tolerance above; the random
  // model's attention is nearly uniform, so the effect is small).
  const BatchTensors shared = batch_tensors(store, all_rows(store), kCpu, PackingAttention::shared);
  at::NoGradGuard no_grad;
  const double other = token_loss_sum(packed->forward(shared.tokens, shared.positions), shared.targets).item<double>();
  EXPECT_GT(std::abs(other - want), 2e-5 * want);
  std::cout << std::setprecision(10) << "  loss sum: packed isolated " << got << ", documents alone " << want
            << ", packed shared " << other << "\n";
}

// A row holding one document (and padding) needs no mask: isolated leaves documents undefined, and the loss is still
// that of the documents alone.
TEST(PackedTraining, RowsOfOneDocumentStayOnTheMaskFreePath) {
  auto docs = documents(4);
  for (auto& d : docs) {
    d.ids.resize(std::min<std::size_t>(d.ids.size(), 9));
    d.train.resize(d.ids.size());
  }
  std::vector<PackedRow> rows;
  for (const auto& d : docs) rows.push_back(pack({d}, 10).at(0));  // one row each: 9 tokens at most, then padding
  const RowStore store(rows);
  const BatchTensors bt = batch_tensors(store, all_rows(store), kCpu, PackingAttention::isolated);
  EXPECT_FALSE(bt.documents.defined());
  const at::TensorOptions cpu = at::TensorOptions().dtype(at::kFloat);
  Llama packed = test::make_model(true, 0, cpu), alone = test::make_model(true, 0, cpu);
  const double got = packed_step(*packed, bt), want = alone_step(*alone, docs);
  EXPECT_NEAR(got, want, 1e-6 * want);
}

// The balanced pipeline (two CPU stages, two chunks, activation checkpointing, LoRA) takes the documents to every
// stage: same loss and gradients as the unsharded model given them.
TEST(PackedTraining, PipelineCarriesTheDocuments) {
  const RowStore store(pack(documents(16), 24));
  std::vector<std::int64_t> idx = all_rows(store);
  idx.resize(4);
  const BatchTensors bt = batch_tensors(store, idx, kCpu, PackingAttention::isolated);
  ASSERT_TRUE(bt.documents.defined());
  const at::TensorOptions cpu = at::TensorOptions().dtype(at::kFloat);
  Llama ref = test::make_model(true, 4, cpu);
  const double want = packed_step(*ref, bt);
  for (bool checkpointing : {false, true}) {
    SCOPED_TRACE(checkpointing ? "activation checkpointing" : "plain");
    Llama model = test::make_model(true, 4, cpu);
    model->set_activation_checkpointing(checkpointing);
    const std::vector<StageRange> stages{{kCpu, 0, 2}, {kCpu, 3, 5}};
    place_stages(*model, stages);
    PipelineExecutor exec(*model, stages, 2, StageThreads::off);
    EXPECT_NEAR(exec.forward_backward(bt, 1.0).item<double>(), want, 1e-6 * want);
    test::expect_same_grads(test::grads_of(*model), test::grads_of(*ref), 1e-5);
  }
}

}  // namespace
}  // namespace ranktune
