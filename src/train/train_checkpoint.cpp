#include "ranktune/train/train_checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <torch/types.h>

#include <mutex>

#include "ranktune/core/error.h"

namespace ranktune {
namespace {

constexpr const char* kWeights = "weights.";
constexpr const char* kOptim = "optim.";

const CheckpointState& replicated_source(const LoadedCheckpoint& ck) {
  return ck.manifest.replicated ? ck.shared : ck.state;
}

at::Tensor saved_tensor(const CheckpointState& st, const std::string& name, const std::string& where) {
  auto it = st.tensors.find(name);
  if (it == st.tensors.end())
    throw CheckpointError("checkpoint " + where + " lacks tensor '" + name + "'",
                          "it was written by a run with other trainable parameters (LoRA settings, model)");
  return it->second;
}

}  // namespace

CheckpointState train_state_capture(const NamedTensors& params, const AdamW& opt, const RunPosition& pos,
                                    bool write_replicated, const std::string& base_identity) {
  CheckpointState st;
  if (write_replicated) {
    for (const auto& item : params) st.tensors[kWeights + item.key()] = item.value().detach();
    for (const auto& item : opt.state()) st.tensors[kOptim + item.key()] = item.value().detach();
  }
  st.ints["optimizer_step"] = pos.step;
  st.ints["tokens_seen"] = pos.tokens;
  st.ints["sampler_epoch"] = pos.cursor.epoch;
  st.ints["sampler_position"] = pos.cursor.position;
  st.strings["base_model"] = base_identity;
  st.blobs["rng.cpu"] = checkpoint_blob(at::detail::getDefaultCPUGenerator().get_state());
  return st;
}

RunPosition train_state_restore(const LoadedCheckpoint& ck, const NamedTensors& params, AdamW& opt,
                                const std::string& base_identity, bool require_same_base) {
  const CheckpointState& src = replicated_source(ck);
  const std::string where = ck.step_dir.string();
  auto base = src.strings.find("base_model");
  if (require_same_base && (base == src.strings.end() || base->second != base_identity))
    throw CheckpointError("checkpoint " + where + " was trained on base model '" +
                              (base == src.strings.end() ? std::string("?") : base->second) + "', this run uses '" +
                              base_identity + "'",
                          "resume with the same --model.path (and shape/seed for a random base)");
  {
    torch::NoGradGuard no_grad;
    for (const auto& item : params) {
      const at::Tensor saved = saved_tensor(src, kWeights + item.key(), where);
      if (saved.sizes() != item.value().sizes())
        throw CheckpointError("checkpoint " + where + ": tensor '" + item.key() + "' has shape " +
                              c10::str(saved.sizes()) + ", the model has " + c10::str(item.value().sizes()));
      item.value().copy_(saved);
    }
  }
  NamedTensors optim;
  for (const auto& [name, t] : src.tensors)
    if (name.rfind(kOptim, 0) == 0) optim.insert(name.substr(std::string(kOptim).size()), t);
  opt.load_state(optim);

  RunPosition pos;
  const CheckpointState& own = ck.has_rank_state ? ck.state : src;
  auto get = [&](const char* key) {
    auto it = own.ints.find(key);
    if (it == own.ints.end()) throw CheckpointError("checkpoint " + where + " lacks '" + key + "'");
    return it->second;
  };
  pos.step = get("optimizer_step");
  pos.tokens = get("tokens_seen");
  pos.cursor = SamplerCursor{get("sampler_epoch"), get("sampler_position")};
  if (ck.has_rank_state) {
    auto rng = ck.state.blobs.find("rng.cpu");
    if (rng != ck.state.blobs.end()) {
      at::Generator gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(checkpoint_blob_tensor(rng->second));
    }
  }
  return pos;
}

}  // namespace ranktune
