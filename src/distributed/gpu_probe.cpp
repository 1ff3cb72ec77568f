#include "gpu_probe.h"

#include <dlfcn.h>

#include <cstdio>

#ifdef RANKTUNE_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "ranktune/core/cuda_check.h"
#endif

namespace ranktune {
namespace {

#ifdef RANKTUNE_HAVE_CUDA
// The few NVML entry points used, resolved with dlsym; NVML's ABI for these is stable since driver 3xx.
struct NvmlMemory {
  unsigned long long total, free, used;
};
class Nvml {
 public:
  Nvml() {
    lib_ = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib_) return;
    init_ = reinterpret_cast<int (*)()>(dlsym(lib_, "nvmlInit_v2"));
    by_uuid_ = reinterpret_cast<int (*)(const char*, void**)>(dlsym(lib_, "nvmlDeviceGetHandleByUUID"));
    mem_ = reinterpret_cast<int (*)(void*, NvmlMemory*)>(dlsym(lib_, "nvmlDeviceGetMemoryInfo"));
    shutdown_ = reinterpret_cast<int (*)()>(dlsym(lib_, "nvmlShutdown"));
    ok_ = init_ && by_uuid_ && mem_ && shutdown_ && init_() == 0;
  }
  ~Nvml() {
    if (ok_) shutdown_();
    if (lib_) dlclose(lib_);
  }
  Nvml(const Nvml&) = delete;
  Nvml& operator=(const Nvml&) = delete;

  long long free_bytes(const std::string& uuid) const {
    if (!ok_) return -1;
    void* dev = nullptr;
    NvmlMemory m{};
    if (by_uuid_(uuid.c_str(), &dev) != 0 || mem_(dev, &m) != 0) return -1;
    return static_cast<long long>(m.free);
  }

 private:
  void* lib_ = nullptr;
  bool ok_ = false;
  int (*init_)() = nullptr;
  int (*by_uuid_)(const char*, void**) = nullptr;
  int (*mem_)(void*, NvmlMemory*) = nullptr;
  int (*shutdown_)() = nullptr;
};

std::string format_uuid(const cudaUUID_t& u) {
  const auto* b = reinterpret_cast<const unsigned char*>(u.bytes);
  char s[48];
  std::snprintf(s, sizeof s, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
  return s;
}
#endif

}  // namespace

void gpu_probe(RankFacts& f) {
#ifdef RANKTUNE_HAVE_CUDA
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  f.cuda_status = static_cast<int>(rc);
  f.cuda_status_text = rc == cudaSuccess ? "" : std::string(cudaGetErrorName(rc)) + ": " + cudaGetErrorString(rc);
  if (rc != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later CUDA checks report their own failures
    return;
  }
  Nvml nvml;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp p{};
    RANKTUNE_CUDA_CHECK(cudaGetDeviceProperties(&p, i));
    GpuInfo g;
    g.index = i;
    g.name = p.name;
    g.uuid = format_uuid(p.uuid);
    char bus[32];
    std::snprintf(bus, sizeof bus, "%04x:%02x:%02x.0", p.pciDomainID, p.pciBusID, p.pciDeviceID);
    g.pci_bus_id = bus;
    g.total_bytes = static_cast<std::int64_t>(p.totalGlobalMem);
    g.free_bytes = nvml.free_bytes(g.uuid);
    f.gpus.push_back(std::move(g));
  }
  f.peer_access.assign(count, std::vector<bool>(count, false));
  for (int i = 0; i < count; ++i)
    for (int j = 0; j < count; ++j) {
      if (i == j) continue;
      int can = 0;
      RANKTUNE_CUDA_CHECK(cudaDeviceCanAccessPeer(&can, i, j));
      f.peer_access[i][j] = can != 0;
    }
#else
  f.cuda_status = -1;
  f.cuda_status_text = "ranktune was built without CUDA (RANKTUNE_WITH_CUDA=OFF)";
#endif
}

}  // namespace ranktune
