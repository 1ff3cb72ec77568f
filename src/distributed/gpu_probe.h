// defines: gpu_probe, this process's visible GPUs (count, name, UUID, PCI id, memory, peer access) or the CUDA
// status that explains why there are none. Free memory comes from NVML (no CUDA context is created on GPUs this
// rank will not use); NVML is loaded at run time so that machines without a driver still start.
#pragma once

#include "ranktune/distributed/topology.h"

namespace ranktune {
void gpu_probe(RankFacts& facts);
}
