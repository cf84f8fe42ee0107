// crop_and_resize's value statistics on the CPU (impls/ops/crop_and_resize/arguments.py: _box_stats, the same three
// numbers): NaN where a box is not finite (else 0), the smallest and the largest box_index.
#include <torch/library.h>

#include <vector>

#include "common/value_stats.h"

namespace impls {
namespace {

std::vector<double> crop_and_resize_value_stats_cpu(const at::Tensor& boxes, const at::Tensor& box_index) {
  TORCH_CHECK(boxes.dim() == 2 && box_index.dim() == 1 && box_index.size(0) == boxes.size(0) && boxes.size(0) > 0,
              "crop_and_resize_value_stats: boxes [K, 4] and box_index [K], K > 0, got ", boxes.sizes(), " and ",
              box_index.sizes());
  bool finite = true;
  for_each_value(boxes, 0, boxes.size(1), [&](int64_t, int64_t, double v) { finite = finite && std::isfinite(v); });
  ValueRange index;
  for_each_value(box_index, 0, 1, [&](int64_t, int64_t, double v) { index.add(v); });
  return {nan_unless(finite), index.min(), index.max()};
}

}  // namespace

TORCH_LIBRARY_IMPL(impls, CPU, m) { m.impl("crop_and_resize_value_stats", TORCH_FN(crop_and_resize_value_stats_cpu)); }

}  // namespace impls
