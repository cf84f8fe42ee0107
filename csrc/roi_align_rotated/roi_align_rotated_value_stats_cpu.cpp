// roi_align_rotated's value statistics on the CPU (impls/ops/roi_align_rotated/arguments.py: _rotated_stats, the
// same six numbers) of rois [K, 6], (batch index, cx, cy, w, h, angle): RoiStats's five, scaled (cx, cy, w, h), then
// the smallest width or height.
#include <torch/library.h>

#include <vector>

#include "common/value_stats.h"

namespace impls {
namespace {

std::vector<double> roi_align_rotated_value_stats_cpu(const at::Tensor& rois, double spatial_scale) {
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 6 && rois.size(0) > 0,
              "roi_align_rotated_value_stats: rois [K, 6], K > 0, got ", rois.sizes());
  std::vector<double> numbers = RoiStats(rois, spatial_scale).numbers();
  ValueRange sides;
  for_each_value(rois, 3, 5, [&](int64_t, int64_t, double v) { sides.add(v); });
  numbers.push_back(sides.min());
  return numbers;
}

}  // namespace

TORCH_LIBRARY_IMPL(impls, CPU, m) {
  m.impl("roi_align_rotated_value_stats", TORCH_FN(roi_align_rotated_value_stats_cpu));
}

}  // namespace impls
