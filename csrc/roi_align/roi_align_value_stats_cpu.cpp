// roi_align's value statistics on the CPU (impls/ops/roi_align/arguments.py: _roi_stats, the same five numbers) of
// rois [K, 5], (batch index, x1, y1, x2, y2): RoiStats.
#include <torch/library.h>

#include <vector>

#include "common/value_stats.h"

namespace impls {
namespace {

std::vector<double> roi_align_value_stats_cpu(const at::Tensor& rois, double spatial_scale) {
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5 && rois.size(0) > 0,
              "roi_align_value_stats: rois [K, 5], K > 0, got ", rois.sizes());
  return RoiStats(rois, spatial_scale).numbers();
}

}  // namespace

TORCH_LIBRARY_IMPL(impls, CPU, m) { m.impl("roi_align_value_stats", TORCH_FN(roi_align_value_stats_cpu)); }

}  // namespace impls
