#include "ranktune/distributed/grad_sync.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#include <limits>
#include <sstream>

#include "ranktune/core/error.h"
#include "ranktune/core/hash.h"
#include "ranktune/core/log.h"
#include "ranktune/distributed/communicator.h"
#ifdef RANKTUNE_HAVE_CUDA
#include <c10/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace ranktune {
namespace {

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string describe_param(const std::string& name, const at::Tensor& p) {
  std::ostringstream os;
  os << "'" << name << "' " << p.sizes() << " " << c10::toString(p.scalar_type())
     << (p.requires_grad() ? " trainable" : " frozen");
  return os.str();
}

// fnv1a's bits as the int64 an at::kLong tensor carries.
std::int64_t signed_fnv1a(const std::string& s) { return std::bit_cast<std::int64_t>(fnv1a(s)); }

constexpr std::size_t kNameBytes = 512;

}  // namespace

#ifdef RANKTUNE_HAVE_CUDA
// The communication stream and the events that order it after the compute stream (before each bucket) and the
// compute stream after it (before the optimizer reads the averaged gradients).
struct GradSync::CudaSide {
  c10::cuda::CUDAStream comm_stream;
  c10::cuda::CUDAEvent ready;
  c10::cuda::CUDAEvent reduced;
  explicit CudaSide(c10::DeviceIndex device) : comm_stream(c10::cuda::getStreamFromPool(true, device)) {}
};
#else
struct GradSync::CudaSide {};
#endif

GradSync::GradSync(Communicator& comm, const NamedTensors& params, GradSyncOptions options)
    : comm_(comm), options_(options) {
  if (params.is_empty()) throw UsageError("DDP: the model has no parameters");
  if (!(options_.bucket_mb > 0))
    throw ConfigError("parallel.bucket_mb = " + std::to_string(options_.bucket_mb) + " must be > 0",
                      "25 (MiB) is a good default; smaller buckets start communication earlier in backward");
  verify_parameter_lists(params);
  broadcast_parameters(params);
  build_buckets(params);
#ifdef RANKTUNE_HAVE_CUDA
  if (!buckets_.empty() && buckets_.front().flat.is_cuda())
    cuda_ = std::make_unique<CudaSide>(buckets_.front().flat.device().index());
#endif
}

GradSync::~GradSync() {
  for (Entry& e : entries_)
    if (e.accumulator) e.accumulator->del_post_hook(e.hook_key);
}

// Every rank sends a count and a hash of its (name, shape, dtype, trainable) list; only when they differ do the ranks
// exchange enough to name the first differing parameter, the same message on every rank.
void GradSync::verify_parameter_lists(const NamedTensors& params) {
  const at::TensorOptions i64 = at::TensorOptions().dtype(at::kLong).device(params.front().value().device());
  std::vector<std::int64_t> hashes;
  std::string all;
  for (const auto& item : params) {
    hashes.push_back(signed_fnv1a(describe_param(item.key(), item.value())));
    all += describe_param(item.key(), item.value()) + "\n";
  }
  const int n = comm_.size();
  at::Tensor mine = at::tensor({static_cast<std::int64_t>(hashes.size()), signed_fnv1a(all)}, i64);
  at::Tensor every = at::empty({n, 2}, i64);
  comm_.all_gather(mine, every);
  comm_.synchronize();
  every = every.cpu();
  if (at::equal(every, every[0].unsqueeze(0).expand({n, 2}))) return;

  // Rank 0's per-parameter hashes, padded to the longest list; each rank finds where it first departs from them.
  const std::int64_t longest = every.select(1, 0).max().item<std::int64_t>();
  at::Tensor reference = at::zeros({longest}, i64.device(at::kCPU));
  for (std::size_t i = 0; i < hashes.size(); ++i) reference[static_cast<long>(i)] = hashes[i];
  reference = reference.to(i64.device());
  comm_.broadcast(reference, 0);
  comm_.synchronize();
  reference = reference.cpu();
  const std::int64_t ref_count = every[0][0].item<std::int64_t>();
  const std::int64_t own_count = static_cast<std::int64_t>(hashes.size());
  std::int64_t first = std::numeric_limits<std::int64_t>::max();
  for (std::int64_t i = 0; i < std::max(ref_count, own_count); ++i)
    if (i >= ref_count || i >= own_count || reference[i].item<std::int64_t>() != hashes[i]) {
      first = i;
      break;
    }
  at::Tensor firsts = at::empty({n}, i64);
  comm_.all_gather(at::tensor({first}, i64), firsts);
  comm_.synchronize();
  firsts = firsts.cpu();
  const std::int64_t position = firsts.min().item<std::int64_t>();
  const int culprit = static_cast<int>(at::argmin(firsts).item<std::int64_t>());

  // Rank 0 and the culprit each describe their parameter at that position.
  auto describe_at = [&](int root) {
    std::string text;
    if (comm_.rank() == root) {
      text = position < own_count ? describe_param(params[static_cast<std::size_t>(position)].key(),
                                                   params[static_cast<std::size_t>(position)].value())
                                  : "nothing (" + std::to_string(own_count) + " parameters)";
    }
    at::Tensor buf = at::zeros({static_cast<long>(kNameBytes)}, at::kByte);
    std::memcpy(buf.data_ptr(), text.data(), std::min(text.size(), kNameBytes - 1));
    buf = buf.to(i64.device());
    comm_.broadcast(buf, root);
    comm_.synchronize();
    buf = buf.cpu();
    return std::string(static_cast<const char*>(buf.data_ptr()));
  };
  const std::string at_root = describe_at(0);
  const std::string at_culprit = describe_at(culprit);
  throw UsageError("DDP: parameter lists differ across ranks at position " + std::to_string(position) +
                       ": rank 0 has " + at_root + ", rank " + std::to_string(culprit) + " has " + at_culprit,
                   "every rank must build the same model: same config, model files and LoRA targets");
}

void GradSync::broadcast_parameters(const NamedTensors& params) {
  at::NoGradGuard no_grad;
  for (const auto& item : params) {
    at::Tensor p = item.value().detach();
    if (p.is_contiguous()) {
      comm_.broadcast(p, 0);
    } else {
      at::Tensor tmp = p.contiguous();
      comm_.broadcast(tmp, 0);
      p.copy_(tmp);
    }
  }
  comm_.synchronize();
}

void GradSync::build_buckets(const NamedTensors& params) {
  const double cap = options_.bucket_mb * 1024.0 * 1024.0;
  std::vector<int> order;
  for (int i = static_cast<int>(params.size()) - 1; i >= 0; --i)
    if (params[static_cast<std::size_t>(i)].value().requires_grad()) order.push_back(i);
  if (order.empty()) throw UsageError("DDP: none of the " + std::to_string(params.size()) + " parameters is trainable");

  // Reverse registration order approximates the order in which backward produces gradients.
  std::vector<std::vector<int>> groups;
  double bytes = 0;
  for (int i : order) {
    const at::Tensor& p = params[i].value();
    const double b = static_cast<double>(p.numel()) * p.element_size();
    const bool fits = !groups.empty() && bytes + b <= cap &&
                      params[groups.back().front()].value().scalar_type() == p.scalar_type() &&
                      params[groups.back().front()].value().device() == p.device();
    if (!fits) {
      groups.emplace_back();
      bytes = 0;
    }
    groups.back().push_back(i);
    bytes += b;
  }

  at::NoGradGuard no_grad;
  for (const auto& group : groups) {
    const at::Tensor& first = params[group.front()].value();
    std::int64_t total = 0;
    for (int i : group) total += params[i].value().numel();
    Bucket bucket;
    bucket.flat = at::zeros({total}, first.options().requires_grad(false));
    std::int64_t offset = 0;
    for (int i : group) {
      const at::Tensor& p = params[i].value();
      Entry e;
      e.name = params[i].key();
      e.param = p;
      e.view = bucket.flat.narrow(0, offset, p.numel()).view(p.sizes());
      e.bucket = static_cast<int>(buckets_.size());
      offset += p.numel();
      if (p.grad().defined()) e.view.copy_(p.grad());
      p.mutable_grad() = e.view;
      bucket.entries.push_back(static_cast<int>(entries_.size()));
      entries_.push_back(std::move(e));
    }
    buckets_.push_back(std::move(bucket));
  }

  // A post-hook on the gradient accumulator runs after the gradient has been added into param.grad() (our view);
  // a tensor hook would run before, when the bucket does not hold the gradient yet.
  for (int k = 0; k < static_cast<int>(entries_.size()); ++k) {
    Entry& e = entries_[k];
    e.accumulator = torch::autograd::impl::grad_accumulator(e.param);
    e.hook_key = e.accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, k](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          on_gradient(k);
          return outputs;
        }));
  }
}

void GradSync::keep_view(Entry& e) {
  // Someone replaced the gradient (zero_grad(set_to_none), an optimizer's zero_grad): take its value back into the
  // bucket so that the all-reduce sees it, and restore the view.
  const at::Tensor& g = e.param.grad();
  if (g.defined() && g.is_same(e.view)) return;
  at::NoGradGuard no_grad;
  if (g.defined()) e.view.copy_(g);
  else e.view.zero_();
  e.param.mutable_grad() = e.view;
}

void GradSync::prepare(bool sync) {
  std::lock_guard lock(mutex_);
  if (!window_open_) {
    for (Entry& e : entries_) e.touched = false;
    window_open_ = true;
  }
  sync_ = sync;
  if (!sync) return;
  for (Entry& e : entries_) e.ready = false;
  for (Bucket& b : buckets_) b.pending = static_cast<int>(b.entries.size());
  next_bucket_ = 0;
  prepare_ns_ = now_ns();
}

void GradSync::on_gradient(int k) {
  std::lock_guard lock(mutex_);
  Entry& e = entries_[k];
  keep_view(e);
  e.touched = true;
  if (!sync_) return;
  if (e.ready)
    throw UsageError("DDP: parameter '" + e.name + "' received a gradient twice in one synchronised backward",
                     "call GradSync::prepare() before every backward; reentrant activation checkpointing runs "
                     "backward twice and is not supported under DDP");
  e.ready = true;
  if (--buckets_[e.bucket].pending == 0) launch_ready_buckets(/*in_backward=*/true);
}

// Buckets go out strictly in index order, so every rank issues the same sequence of collectives even when gradients
// arrive in a different order or some only in finish().
void GradSync::launch_ready_buckets(bool in_backward) {
  while (next_bucket_ < num_buckets() && buckets_[next_bucket_].pending == 0) {
    Bucket& b = buckets_[next_bucket_];
    if (options_.trace)
      trace_.push_back(
          {steps_, next_bucket_, static_cast<std::size_t>(b.flat.nbytes()), ms_since_prepare(), 0, in_backward});
#ifdef RANKTUNE_HAVE_CUDA
    if (cuda_) {
      const c10::DeviceIndex dev = b.flat.device().index();
      cuda_->ready.record(c10::cuda::getCurrentCUDAStream(dev));
      cuda_->ready.block(cuda_->comm_stream);
      c10::cuda::CUDAStreamGuard guard(cuda_->comm_stream);
      comm_.all_reduce(b.flat, ReduceOp::avg);
      ++next_bucket_;
      continue;
    }
#endif
    comm_.all_reduce(b.flat, ReduceOp::avg);
    ++next_bucket_;
  }
}

void GradSync::finish() {
  std::lock_guard lock(mutex_);
  if (!sync_) throw UsageError("DDP: GradSync::finish() without prepare(true) before the last micro-step's backward");
  const double end_ms = ms_since_prepare();
  for (Entry& e : entries_) {
    if (e.ready) continue;
    keep_view(e);
    if (!e.touched && reported_unused_.insert(e.name).second)
      logr() << "DDP: parameter '" << e.name << "' received no gradient on this rank in step " << steps_
             << "; it counts as zero in the average (as no gradient where no rank has one; reported once)";
    e.ready = true;
    --buckets_[e.bucket].pending;
  }
  launch_ready_buckets(/*in_backward=*/false);

  // Which parameters got a gradient on some rank: one that got none anywhere is left without a gradient, so that the
  // optimizer skips it exactly as it would in a single process (a zero gradient would still apply weight decay).
  at::Tensor used = at::empty({static_cast<long>(entries_.size())}, at::kFloat);
  for (std::size_t k = 0; k < entries_.size(); ++k) used[static_cast<long>(k)] = entries_[k].touched ? 1.0f : 0.0f;
  used = used.to(buckets_.front().flat.device());
#ifdef RANKTUNE_HAVE_CUDA
  if (cuda_) {
    // Same stream as the buckets: NCCL collectives of one communicator must not run concurrently on two streams.
    const c10::DeviceIndex dev = buckets_.front().flat.device().index();
    cuda_->ready.record(c10::cuda::getCurrentCUDAStream(dev));
    cuda_->ready.block(cuda_->comm_stream);
    {
      c10::cuda::CUDAStreamGuard guard(cuda_->comm_stream);
      comm_.all_reduce(used, ReduceOp::max);
    }
    cuda_->reduced.record(cuda_->comm_stream);
    cuda_->reduced.block(c10::cuda::getCurrentCUDAStream(dev));
  } else {
    comm_.all_reduce(used, ReduceOp::max);
  }
#else
  comm_.all_reduce(used, ReduceOp::max);
#endif
  // Waits with the communicator's deadline: a dead peer becomes a CommError here rather than a hang in the optimizer.
  comm_.synchronize();
  used = used.cpu();
  const float* flags = used.data_ptr<float>();
  for (std::size_t k = 0; k < entries_.size(); ++k)
    if (flags[k] == 0.0f) entries_[k].param.mutable_grad() = at::Tensor();
  for (BucketLaunch& l : trace_)
    if (l.step == steps_) l.backward_end_ms = end_ms;
  ++steps_;
  sync_ = false;
  window_open_ = false;
}

void GradSync::zero_grad() {
  std::lock_guard lock(mutex_);
  at::NoGradGuard no_grad;
  for (Bucket& b : buckets_) b.flat.zero_();
  for (Entry& e : entries_) keep_view(e);
}

double GradSync::ms_since_prepare() const { return static_cast<double>(now_ns() - prepare_ns_) / 1e6; }

std::vector<std::string> GradSync::bucket_parameters(int bucket) const {
  std::vector<std::string> names;
  for (int k : buckets_.at(bucket).entries) names.push_back(entries_[k].name);
  return names;
}

std::string GradSync::format_trace() const {
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(3);
  for (const BucketLaunch& l : trace_)
    os << "step " << l.step << " bucket " << l.bucket << " " << l.bytes << " B launched at " << l.launch_ms
       << " ms, backward ended at " << l.backward_end_ms << " ms" << (l.in_backward ? " (overlapped)" : "") << "\n";
  return os.str();
}

std::string GradSync::describe() const {
  std::int64_t numel = 0;
  for (const Bucket& b : buckets_) numel += b.flat.numel();
  std::ostringstream os;
  os << "DDP: " << buckets_.size() << " gradient buckets (" << options_.bucket_mb << " MiB cap) over "
     << entries_.size() << " trainable tensors, " << numel << " params, all-reduce avg over " << comm_.size()
     << " ranks (" << comm_.name() << ")";
  return os.str();
}

}  // namespace ranktune
