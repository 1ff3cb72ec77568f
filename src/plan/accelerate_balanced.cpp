// accelerate's balanced placement, re-stated over the module tree of a Llama-family model
// (model.{embed_tokens, layers.N, norm, rotary_emb}, lm_head): sizes count weights only; budgets are
// total/num_gpus + 1.25 x max(decoder layer, mean leaf module) on every GPU but the last; the fill is greedy in
// registration order, splitting any module but a decoder layer, and GPU 0 keeps room for the largest layer not yet
// placed. A tied lm_head follows the embedding.
#include "ranktune/plan/accelerate_balanced.h"

#include <algorithm>
#include <deque>
#include <iomanip>
#include <sstream>

#include "ranktune/core/text.h"

namespace ranktune {
namespace {

struct Node {
  std::string name;
  std::int64_t size = 0;
  std::vector<int> children;
  bool no_split = false;
  int unit = -1;  // the planner unit a leaf-or-layer maps to (embed 0, layer i -> i+1, head L+1)
};

struct Tree {
  std::vector<Node> nodes;
  int add(Node n) {
    nodes.push_back(std::move(n));
    return static_cast<int>(nodes.size()) - 1;
  }
};

}  // namespace

AccelerateAssignment accelerate_balanced_map(const LlamaConfig& m, int w, const std::vector<DeviceBudget>& devices,
                                             bool low_zero) {
  const std::int64_t L = m.num_layers;
  const std::int64_t d = m.hidden_size, q = m.num_heads * m.head_dim, kv = m.num_kv_heads * m.head_dim;
  const std::int64_t f = m.intermediate_size;
  const bool tied = m.tie_word_embeddings;
  const std::int64_t embed = llama_embedding_parameter_count(m) * w;
  const std::int64_t layer = llama_layer_parameter_count(m) * w;
  const std::int64_t head = tied ? 0 : embed;      // a tied head's weight is counted with the embedding
  const std::int64_t rotary = m.head_dim / 2 * w;  // model.rotary_emb's buffer: head_dim / 2 entries

  // Leaf modules (for the mean-leaf buffer): embedding, 9 per layer (their sizes add up to `layer`), final norm,
  // rotary buffer, untied head.
  std::vector<std::int64_t> leaves{embed};
  const std::int64_t qkv_bias = m.qkv_bias ? 1 : 0, o_bias = m.o_bias ? 1 : 0, mlp_bias = m.mlp_bias ? 1 : 0;
  for (std::int64_t i = 0; i < L; ++i) {
    for (std::int64_t s : {(d * q + qkv_bias * q) * w, (d * kv + qkv_bias * kv) * w, (d * kv + qkv_bias * kv) * w,
                           (q * d + o_bias * d) * w, (d * f + mlp_bias * f) * w, (d * f + mlp_bias * f) * w,
                           (f * d + mlp_bias * d) * w, d * w, d * w})
      leaves.push_back(s);
  }
  leaves.push_back(d * w);
  leaves.push_back(rotary);
  if (!tied) leaves.push_back(head);

  const std::int64_t total = embed + L * layer + d * w + rotary + head;
  const int n = static_cast<int>(devices.size());
  std::vector<std::int64_t> budget(n);
  for (int i = 0; i < n; ++i) budget[i] = devices[i].bytes;

  // get_balanced_memory
  if (n > 1) {
    std::int64_t leaf_sum = 0;
    for (auto s : leaves) leaf_sum += s;
    const std::int64_t mean_leaf = leaf_sum / static_cast<std::int64_t>(leaves.size());
    const auto buffer = static_cast<std::int64_t>(1.25 * static_cast<double>(std::max(layer, mean_leaf)));
    const std::int64_t per_gpu = total / (low_zero ? n - 1 : n) + buffer;
    for (int i = 0; i + 1 < n; ++i) budget[i] = std::min(low_zero && i == 0 ? budget[0] : per_gpu, budget[i]);
    if (low_zero) {
      std::int64_t rest = 0;
      for (int i = 1; i < n; ++i) rest += budget[i];
      budget[0] = std::min(std::max<std::int64_t>(0, total - rest), budget[0]);
    }
  }

  // The module tree, in registration order.
  Tree t;
  const int emb = t.add({"model.embed_tokens", embed, {}, false, 0});
  std::vector<int> layer_nodes;
  for (std::int64_t i = 0; i < L; ++i)
    layer_nodes.push_back(t.add({"model.layers." + std::to_string(i), layer, {}, true, static_cast<int>(i + 1)}));
  const int layers = t.add({"model.layers", L * layer, layer_nodes, false, -1});
  const int norm = t.add({"model.norm", d * w, {}, false, static_cast<int>(L + 1)});
  const int rotary_node = t.add({"model.rotary_emb", rotary, {}, false, -1});
  const int model = t.add({"model", embed + L * layer + d * w + rotary, {emb, layers, norm, rotary_node}, false, -1});
  const int lm_head = t.add({"lm_head", head, {}, false, static_cast<int>(L + 1)});

  // The largest unsplittable piece among what is still to place (get_max_layer_size).
  auto max_layer = [&](const std::deque<int>& todo) {
    std::int64_t best = 0;
    std::deque<int> q(todo.begin(), todo.end());
    while (!q.empty()) {
      const Node& nd = t.nodes[q.front()];
      q.pop_front();
      if (nd.children.empty() || nd.no_split) best = std::max(best, nd.size);
      else
        for (int c : nd.children) q.push_back(c);
    }
    return best;
  };

  AccelerateAssignment out;
  out.device_of_unit.assign(static_cast<std::size_t>(L + 2), -1);
  out.weight_bytes.assign(n, 0);
  std::vector<std::int64_t> used(n, 0);
  std::deque<int> todo{model, lm_head};
  int dev = 0;
  auto assign = [&](int node, int device) {
    std::deque<int> q{node};
    while (!q.empty()) {
      const Node& nd = t.nodes[q.front()];
      q.pop_front();
      if (nd.unit >= 0 && (nd.name != "model.norm" || out.device_of_unit[nd.unit] < 0))
        out.device_of_unit[nd.unit] = device;
      for (int c : nd.children) q.push_back(c);
    }
  };
  while (!todo.empty()) {
    const int cur = todo.front();
    todo.pop_front();
    const Node& nd = t.nodes[cur];
    if (dev >= n) {  // accelerate would offload to CPU/disk
      assign(cur, -1);
      continue;
    }
    // GPU 0 keeps room for the largest piece still waiting (the current one excluded).
    const std::int64_t reserve = dev == 0 ? max_layer(todo) : 0;
    // The tied head travels with the embedding.
    const bool tied_pair = tied && cur == emb;
    const std::int64_t need = nd.size;
    if (used[dev] + need <= budget[dev] - reserve) {
      used[dev] += need;
      assign(cur, dev);
      if (tied_pair) {
        out.device_of_unit[static_cast<std::size_t>(L + 1)] = dev;
        todo.erase(std::remove(todo.begin(), todo.end(), lm_head), todo.end());
      }
      continue;
    }
    if (nd.children.empty() || nd.no_split) {
      ++dev;
      todo.push_front(cur);
    } else {
      for (auto it = nd.children.rbegin(); it != nd.children.rend(); ++it) todo.push_front(*it);
    }
  }
  for (int i = 0; i < n; ++i) out.weight_bytes[i] = used[i];
  return out;
}

std::string accelerate_table(const LlamaConfig& m, const AccelerateAssignment& a,
                             const std::vector<DeviceBudget>& devices) {
  std::ostringstream os;
  const int n = static_cast<int>(devices.size());
  for (int dv = -1; dv < n; ++dv) {
    int layers = 0;
    bool embed = false, head = false;
    for (std::size_t u = 0; u < a.device_of_unit.size(); ++u) {
      if (a.device_of_unit[u] != dv) continue;
      if (u == 0) embed = true;
      else if (u + 1 == a.device_of_unit.size()) head = true;
      else ++layers;
    }
    if (dv < 0 && !layers && !embed && !head) continue;
    os << "  " << std::left << std::setw(8) << (dv < 0 ? "offload" : "cuda:" + std::to_string(devices[dv].device))
       << (embed ? "embed + " : "") << layers << " layer(s)"
       << (head ? (m.tie_word_embeddings ? " + head (tied)" : " + head") : "")
       << (dv >= 0 ? "   weights " + format_bytes(a.weight_bytes[dv]) : "") << '\n';
  }
  return os.str();
}

}  // namespace ranktune
