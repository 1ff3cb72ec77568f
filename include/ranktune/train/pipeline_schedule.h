// defines: PipeAction and gpipe_schedule, the order in which one process runs the stages of a balanced model over
// the chunks (pipeline micro-batches) of one micro-step. GPipe: every chunk's forward through every stage, then every
// backward, both in wavefront order, so that stage s works on chunk c while stage s+1 works on chunk c-1. The host
// issues the actions in this order; GPU kernels are asynchronous, so devices overlap as the wavefront allows.
// chunks = 1 is naive sequential execution (one device busy at a time). Pure: no LibTorch, CUDA or MPI.
#pragma once

#include <string>
#include <vector>

namespace ranktune {

struct PipeAction {
  enum Kind { forward, backward } kind = forward;
  int stage = 0;
  int chunk = 0;
  int tick = 0;  // the wavefront step: actions of one tick can run on different devices at the same time
};

std::vector<PipeAction> gpipe_schedule(int stages, int chunks);

// "F0.0 F0.1|F1.0 ..." (ticks separated by '|'), for tests and the log.
std::string schedule_string(const std::vector<PipeAction>& actions);

}  // namespace ranktune
