#include "ranktune/distributed/mpi_communicator.h"

#include <ATen/ATen.h>

#include "ranktune/distributed/mpi_check.h"

namespace ranktune {
namespace {

MPI_Datatype mpi_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kInt: return MPI_INT32_T;
    case at::kLong: return MPI_INT64_T;
    case at::kByte: return MPI_UINT8_T;
    case at::kChar: return MPI_INT8_T;
    case at::kBool: return MPI_C_BOOL;
    default: return MPI_DATATYPE_NULL;
  }
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg: return MPI_SUM;
    case ReduceOp::max: return MPI_MAX;
    case ReduceOp::min: return MPI_MIN;
  }
  return MPI_SUM;
}

void require_cpu_contiguous(const at::Tensor& t, const char* what) {
  if (!t.device().is_cpu())
    throw CommError(std::string("MPI communicator: ") + what + " tensor is on " + t.device().str() +
                    "; the MPI communicator handles CPU tensors (use the NCCL communicator for CUDA)");
  if (!t.is_contiguous()) throw CommError(std::string("MPI communicator: ") + what + " tensor is not contiguous");
}

int count_of(const at::Tensor& t) {
  if (t.numel() > std::numeric_limits<int>::max())
    throw CommError("MPI communicator: tensor of " + std::to_string(t.numel()) + " elements exceeds MPI's int count");
  return static_cast<int>(t.numel());
}

}  // namespace

MpiCommunicator::MpiCommunicator(const MpiEnv& env) : env_(env) {}

void MpiCommunicator::all_reduce(const at::Tensor& t, ReduceOp op) {
  require_cpu_contiguous(t, "all_reduce");
  if (t.numel() == 0) return;
  const bool low_precision = t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf;
  at::Tensor work = low_precision ? t.to(at::kFloat) : t;
  const MPI_Datatype type = mpi_type(work.scalar_type());
  if (type == MPI_DATATYPE_NULL)
    throw CommError(std::string("MPI communicator: dtype ") + c10::toString(t.scalar_type()) + " is not supported");
  if (op == ReduceOp::avg && !at::isFloatingType(work.scalar_type()))
    throw CommError("MPI communicator: avg needs a floating-point tensor");
  RANKTUNE_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, work.data_ptr(), count_of(work), type, mpi_op(op), env_.world()));
  if (op == ReduceOp::avg) work.div_(static_cast<double>(env_.size()));
  if (low_precision) t.copy_(work);
}

void MpiCommunicator::broadcast(const at::Tensor& t, int root) {
  require_cpu_contiguous(t, "broadcast");
  if (t.numel() == 0) return;
  RANKTUNE_MPI_CHECK(MPI_Bcast(t.data_ptr(), static_cast<int>(t.nbytes()), MPI_BYTE, root, env_.world()));
}

void MpiCommunicator::all_gather(const at::Tensor& in, const at::Tensor& out) {
  require_cpu_contiguous(in, "all_gather input");
  require_cpu_contiguous(out, "all_gather output");
  if (out.nbytes() != in.nbytes() * static_cast<std::size_t>(env_.size()) || out.scalar_type() != in.scalar_type())
    throw CommError("MPI communicator: all_gather output must hold size() copies of the input's dtype and shape");
  RANKTUNE_MPI_CHECK(MPI_Allgather(in.data_ptr(), static_cast<int>(in.nbytes()), MPI_BYTE, out.data_ptr(),
                                   static_cast<int>(in.nbytes()), MPI_BYTE, env_.world()));
}

void MpiCommunicator::barrier() { RANKTUNE_MPI_CHECK(MPI_Barrier(env_.world())); }

}  // namespace ranktune
