#include "ranktune/distributed/nccl_communicator.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>

#include <chrono>
#include <thread>

#include "ranktune/core/cuda_check.h"
#include "ranktune/distributed/host_collectives.h"
#include "ranktune/distributed/mpi_check.h"
#include "ranktune/distributed/nccl_check.h"

namespace ranktune {
namespace {

using Clock = std::chrono::steady_clock;

ncclDataType_t nccl_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kHalf: return ncclFloat16;
    case at::kBFloat16: return ncclBfloat16;
    case at::kInt: return ncclInt32;
    case at::kLong: return ncclInt64;
    case at::kByte: return ncclUint8;
    case at::kChar: return ncclInt8;
    default: throw CommError(std::string("NCCL communicator: dtype ") + c10::toString(t) + " is not supported");
  }
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::avg: return ncclAvg;
    case ReduceOp::max: return ncclMax;
    case ReduceOp::min: return ncclMin;
  }
  return ncclSum;
}

void pause() { std::this_thread::sleep_for(std::chrono::microseconds(50)); }

// Waits between polls of a collective's state: yields the core for the first 200 us (a launch, or a small
// collective, is done within tens of microseconds, and a 50 us sleep costs ~100 us: measured as a fixed ~130 us per
// all-reduce on two H200s), then sleeps 50 us per poll so that a long wait does not hold a core.
class Backoff {
 public:
  void pause() {
    if (Clock::now() - start_ < std::chrono::microseconds(200)) std::this_thread::yield();
    else ::ranktune::pause();
  }

 private:
  Clock::time_point start_ = Clock::now();
};

}  // namespace

NcclCommunicator::NcclCommunicator(const MpiEnv& env, int device, double timeout_s)
    : env_(env), device_(device), timeout_s_(timeout_s) {
  RANKTUNE_CUDA_CHECK(cudaSetDevice(device_));
  ncclUniqueId id{};
  if (env_.rank() == 0) RANKTUNE_NCCL_CHECK(ncclGetUniqueId(&id));
  // Plain MPI rather than a host collective: the id is an opaque fixed-size struct, sent as its bytes in one call.
  RANKTUNE_MPI_CHECK(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, env_.world()));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  // Agree on the outcome so that a rank whose init failed does not leave the others waiting in the next collective.
  std::string failure;
  try {
    RANKTUNE_NCCL_CHECK(ncclCommInitRankConfig(&comm_, env_.size(), id, env_.rank(), &config));
    wait_enqueued("ncclCommInitRankConfig");
  } catch (const Error& e) {
    failure = e.what();
  }
  if (host::any(env_, !failure.empty())) {
    if (comm_ && !aborted_) ncclCommAbort(comm_);
    aborted_ = true;
    throw CommError(failure.empty() ? "NCCL initialisation failed on another rank" : failure,
                    "NCCL_DEBUG=INFO shows why; check that every rank drives a different GPU (ranktune topology)");
  }
}

NcclCommunicator::~NcclCommunicator() {
  if (!comm_ || aborted_) return;
  // Finalize flushes outstanding work; if it fails or outlives the timeout, abort rather than hang here.
  ncclResult_t state = ncclCommFinalize(comm_);
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s_);
  while (state == ncclInProgress && Clock::now() < deadline) {
    pause();
    if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess) break;
  }
  if (state == ncclSuccess) ncclCommDestroy(comm_);
  else ncclCommAbort(comm_);
}

void NcclCommunicator::abort_with(const std::string& what) {
  if (comm_ && !aborted_) ncclCommAbort(comm_);
  aborted_ = true;
  throw CommError(what + " (rank " + std::to_string(env_.rank()) + ", cuda:" + std::to_string(device_) + ")",
                  "a peer rank died or is stuck; if one rank legitimately works alone for long (saving a checkpoint), "
                  "raise --parallel.comm_timeout_s; NCCL_DEBUG=INFO shows NCCL's view");
}

// Each collective is issued as a group of one: on a non-blocking communicator ncclGroupEnd reports ncclInProgress
// until the launch is done, and the async state turns ncclSuccess only after it, so an event recorded on the stream
// afterwards follows the collective. (NCCL has had lone non-blocking calls report success before their kernel was
// enqueued; the group form does not depend on that being fixed.)
void NcclCommunicator::end_group_and_wait(const char* what) {
  RANKTUNE_NCCL_CHECK(ncclGroupEnd());
  wait_enqueued(what);
}

void NcclCommunicator::wait_enqueued(const char* what) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s_);
  ncclResult_t state = ncclInProgress;
  Backoff backoff;
  for (;;) {
    RANKTUNE_NCCL_CHECK(ncclCommGetAsyncError(comm_, &state));
    if (state == ncclSuccess) return;
    if (state != ncclInProgress)
      abort_with(std::string("NCCL ") + what + " failed: " + detail::nccl_error_string(state));
    if (Clock::now() > deadline)
      abort_with(std::string("NCCL ") + what + " did not complete within " + std::to_string(timeout_s_) + " s");
    backoff.pause();
  }
}

cudaStream_t NcclCommunicator::stream_for(const at::Tensor& t) const {
  if (!t.is_cuda() || t.get_device() != device_)
    throw CommError("NCCL communicator of cuda:" + std::to_string(device_) + " got a tensor on " + t.device().str());
  if (!t.is_contiguous()) throw CommError("NCCL communicator: tensor is not contiguous");
  return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_)).stream();
}

void NcclCommunicator::all_reduce(const at::Tensor& t, ReduceOp op) {
  if (aborted_) throw CommError("NCCL communicator was aborted earlier");
  last_stream_ = stream_for(t);
  issued_ = true;
  RANKTUNE_NCCL_CHECK(ncclGroupStart());
  RANKTUNE_NCCL_CHECK(ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                                    nccl_type(t.scalar_type()), nccl_op(op), comm_, last_stream_));
  end_group_and_wait("ncclAllReduce");
}

void NcclCommunicator::broadcast(const at::Tensor& t, int root) {
  if (aborted_) throw CommError("NCCL communicator was aborted earlier");
  last_stream_ = stream_for(t);
  issued_ = true;
  RANKTUNE_NCCL_CHECK(ncclGroupStart());
  RANKTUNE_NCCL_CHECK(ncclBroadcast(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                                    nccl_type(t.scalar_type()), root, comm_, last_stream_));
  end_group_and_wait("ncclBroadcast");
}

void NcclCommunicator::all_gather(const at::Tensor& in, const at::Tensor& out) {
  if (aborted_) throw CommError("NCCL communicator was aborted earlier");
  if (out.numel() != in.numel() * env_.size() || out.scalar_type() != in.scalar_type())
    throw CommError("NCCL communicator: all_gather output must hold size() copies of the input's dtype and shape");
  last_stream_ = stream_for(in);
  issued_ = true;
  stream_for(out);
  RANKTUNE_NCCL_CHECK(ncclGroupStart());
  RANKTUNE_NCCL_CHECK(ncclAllGather(in.data_ptr(), out.data_ptr(), static_cast<size_t>(in.numel()),
                                    nccl_type(in.scalar_type()), comm_, last_stream_));
  end_group_and_wait("ncclAllGather");
}

void NcclCommunicator::barrier() {
  synchronize();
  host::barrier(env_);
}

void NcclCommunicator::synchronize() {
  if (aborted_) throw CommError("NCCL communicator was aborted earlier");
  if (!issued_) return;  // (not `!last_stream_`: the default stream's handle is null, and collectives run on it too)
  cudaEvent_t done = nullptr;
  RANKTUNE_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  RANKTUNE_CUDA_CHECK(cudaEventRecord(done, last_stream_));
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s_);
  Backoff backoff;
  for (;;) {
    const cudaError_t q = cudaEventQuery(done);
    if (q == cudaSuccess) break;
    if (q != cudaErrorNotReady) {
      cudaEventDestroy(done);
      RANKTUNE_CUDA_CHECK(q);
    }
    ncclResult_t state = ncclSuccess;
    RANKTUNE_NCCL_CHECK(ncclCommGetAsyncError(comm_, &state));
    if (state != ncclSuccess && state != ncclInProgress) {
      cudaEventDestroy(done);
      abort_with("NCCL collective failed: " + detail::nccl_error_string(state));
    }
    if (Clock::now() > deadline) {
      cudaEventDestroy(done);
      abort_with("NCCL collective did not finish within " + std::to_string(timeout_s_) + " s");
    }
    backoff.pause();
  }
  RANKTUNE_CUDA_CHECK(cudaEventDestroy(done));
}

}  // namespace ranktune
