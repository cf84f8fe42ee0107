// The scans behind the argument checks' value statistics on the CPU (impls/core/checks.py: read_stats): each
// operator's `<op>_value_stats` kernel (csrc/<op>/<op>_value_stats_cpu.cpp) reads its boxes in place, any dtype and
// strides, and returns the numbers its Python statistics would (the same list, float64, NaN where they give NaN).
// One dispatched operator where the check computed them with several: right after a kernel call, whose data has
// pushed the interpreter's and torch's code out of the caches, each operator or NumPy call costs microseconds.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace impls {

// f(row, column, value as double) for every value of columns [begin, end) of t, a CPU tensor [K, M] (or [K], one
// column), read in place.
template <typename F>
void for_each_value(const at::Tensor& t, int64_t begin, int64_t end, const F& f) {
  TORCH_CHECK(t.device().is_cpu() && t.layout() == at::kStrided && (t.dim() == 1 || t.dim() == 2),
              "value statistics read a strided CPU tensor [K] or [K, M], got ", t.sizes(), " on ", t.device());
  const int64_t rows = t.size(0), row_stride = t.stride(0), col_stride = t.dim() == 2 ? t.stride(1) : 0;
  AT_DISPATCH_ALL_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "for_each_value", [&] {
    const scalar_t* data = t.const_data_ptr<scalar_t>();
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = begin; j < end; ++j) f(i, j, static_cast<double>(data[i * row_stride + j * col_stride]));
    }
  });
}

// The smallest and the largest of some values, NaN once a NaN is among them (as torch's min and max).
struct ValueRange {
  double lo = std::numeric_limits<double>::infinity(), hi = -std::numeric_limits<double>::infinity();
  bool nan = false;

  void add(double v) {
    nan = nan || std::isnan(v);
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  double min() const { return nan ? std::nan("") : lo; }
  double max() const { return nan ? std::nan("") : hi; }
};

// checks.nan_unless_finite's value: 0 where every value was finite, else NaN.
inline double nan_unless(bool finite) { return finite ? 0.0 : std::nan(""); }

// The statistics of roi_align's and roi_align_rotated's rois [K, M] (a batch index, then four box values that the
// map's spatial_scale multiplies, in float64): every value finite, every batch index whole, their range, every
// scaled value finite; the first five numbers of both operators' statistics.
struct RoiStats {
  bool finite = true, whole = true, scaled_finite = true;
  ValueRange batch;

  RoiStats(const at::Tensor& rois, double spatial_scale) {
    for_each_value(rois, 0, rois.size(1), [&](int64_t, int64_t j, double v) {
      finite = finite && std::isfinite(v);
      if (j == 0) {
        whole = whole && v == std::floor(v);
        batch.add(v);
      } else if (j <= 4) {
        scaled_finite = scaled_finite && std::isfinite(v * spatial_scale);
      }
    });
  }
  std::vector<double> numbers() const {
    return {nan_unless(finite), whole ? 1.0 : 0.0, batch.min(), batch.max(), nan_unless(scaled_finite)};
  }
};

}  // namespace impls
