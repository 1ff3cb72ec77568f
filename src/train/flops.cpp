#include "ranktune/train/flops.h"

namespace ranktune {

double train_flops_per_token(const FlopsShape& s) {
  const double attention = 12.0 * s.layers * s.hidden * s.seq_len;
  if (!s.frozen_base) return 6.0 * (s.non_embedding_params + s.adapter_params) + attention;
  return 4.0 * s.non_embedding_params + 6.0 * s.adapter_params + attention;
}

double mfu(double tokens_per_second, double flops_per_token, int devices, double peak_flops) {
  if (peak_flops <= 0 || devices <= 0) return 0;
  return tokens_per_second * flops_per_token / (peak_flops * devices);
}

}  // namespace ranktune
