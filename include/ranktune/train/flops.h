// defines: the FLOP accounting behind MFU: train_flops_per_token (6N + 12·L·d·T, or 4N + 6N_adapters + 12·L·d·T with
// LoRA's frozen base, per /work/shared/ANCHORS.md) and mfu() against a peak (989 TFLOP/s dense bf16 for H100/H200).
// Pure: the trainer passes the counts, so the same numbers are used in logs, metrics files and bench/.
#pragma once

namespace ranktune {

inline constexpr double kH100BF16PeakFlops = 989e12;

struct FlopsShape {
  double non_embedding_params = 0;  // N: all weights but the token embedding (an untied lm_head counts)
  double adapter_params = 0;        // LoRA A/B parameters (0 for full fine-tuning)
  bool frozen_base = false;         // LoRA: the base gets no weight-gradient matmul
  int layers = 0;                   // L
  int hidden = 0;                   // d
  int seq_len = 0;                  // T (attention's score and value matmuls grow with it)
};

// Forward + backward FLOPs per trained token. Full fine-tune: 6N + 12·L·d·T. LoRA: 4N + 6·N_adapters + 12·L·d·T
// (activation gradients through the frozen weights still cost 2N; their weight gradients are skipped).
double train_flops_per_token(const FlopsShape& s);

// Model FLOPs utilisation: achieved FLOP/s over `devices` times the per-device peak. 0 when the peak is not positive.
double mfu(double tokens_per_second, double flops_per_token, int devices, double peak_flops = kH100BF16PeakFlops);

}  // namespace ranktune
