// Sampling math shared by the CPU and CUDA kernels of both operators.
//
// Every expression mirrors impls/backends/reference.py term by term and in the same evaluation order, so that in
// float64 (and with FP contraction off) the C++ kernels reproduce the reference bit for bit. T is the math type:
// at::opmath_type of the tensor's dtype (float for half/bfloat16/float32, double for float64).
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define IMPLS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define IMPLS_HOST_DEVICE inline
#endif

namespace impls {

// floor/ceil by overload, not std::, so the same call compiles for host and device.
IMPLS_HOST_DEVICE float floor_(float v) { return floorf(v); }
IMPLS_HOST_DEVICE double floor_(double v) { return floor(v); }
IMPLS_HOST_DEVICE float ceil_(float v) { return ceilf(v); }
IMPLS_HOST_DEVICE double ceil_(double v) { return ceil(v); }

// ------------------------------------------------------------------------------------------ crop_and_resize

// Sample coordinate i of `crop` along a normalized box side [lo, hi] on a side of `size` pixels, in pixel-index
// space (pixel j sits at j). e.g. lo = 0, hi = 1, crop = 3, size = 5: 0, 2, 4.
template <typename T>
IMPLS_HOST_DEVICE T crop_coordinate(T lo, T hi, int64_t i, int64_t crop, int64_t size) {
  if (crop > 1) {
    const T scale = (hi - lo) * static_cast<T>(size - 1) / static_cast<T>(crop - 1);
    return lo * static_cast<T>(size - 1) + static_cast<T>(i) * scale;
  }
  return static_cast<T>(0.5) * (lo + hi) * static_cast<T>(size - 1);  // crop == 1: the box centre
}

// NB: written as !(in range) so a NaN coordinate counts as out of range (TensorFlow's rule).
template <typename T>
IMPLS_HOST_DEVICE bool crop_out_of_range(T v, int64_t size) {
  return !(static_cast<T>(0) <= v && v <= static_cast<T>(size - 1));
}

// The two pixels around an in-range coordinate and the interpolation weight of the second one.
// An integer coordinate gives lo == hi and lerp == 0.
template <typename T>
struct CropTap {
  int64_t lo;
  int64_t hi;
  T lerp;
};

template <typename T>
IMPLS_HOST_DEVICE CropTap<T> crop_tap(T v) {
  const T f = floor_(v);
  return {static_cast<int64_t>(f), static_cast<int64_t>(ceil_(v)), v - f};
}

// std::round for v >= 0 (the only case: v is in range): 2.5 -> 3, half away from zero.
template <typename T>
IMPLS_HOST_DEVICE int64_t round_half_away(T v) {
  const T f = floor_(v);
  return static_cast<int64_t>(v - f >= static_cast<T>(0.5) ? f + static_cast<T>(1) : f);
}

// The image factors of a bilinear sample's box gradient, from its taps TL, TR, BL, BR and lerps: d sample / d y
// (the vertical slope, blended across x) and d sample / d x. The box gradient multiplies each by the incoming
// gradient and the coordinate's derivative (crop_coordinate_grads).
template <typename T>
struct TapSlopes {
  T dy;
  T dx;
};

template <typename T>
IMPLS_HOST_DEVICE TapSlopes<T> tap_slopes(T tl, T tr, T bl, T br, T x_lerp, T y_lerp) {
  return {(1 - x_lerp) * (bl - tl) + x_lerp * (br - tr), (1 - y_lerp) * (tr - tl) + y_lerp * (br - bl)};
}

// d crop_coordinate / d lo and d crop_coordinate / d hi.
template <typename T>
IMPLS_HOST_DEVICE void crop_coordinate_grads(int64_t i, int64_t crop, int64_t size, T& d_lo, T& d_hi) {
  if (crop > 1) {
    const T ratio = static_cast<T>(size - 1) / static_cast<T>(crop - 1);
    d_lo = static_cast<T>(size - 1) - static_cast<T>(i) * ratio;
    d_hi = static_cast<T>(i) * ratio;
  } else {
    const T half = static_cast<T>(0.5) * static_cast<T>(size - 1);
    d_lo = half;
    d_hi = half;
  }
}

// ------------------------------------------------------------------------------------------------ roi_align

// Per-box constants of torchvision's roi_align.
template <typename T>
struct RoiGeometry {
  T y_start;
  T x_start;
  T bin_h;
  T bin_w;
  int64_t grid_h;  // samples per bin along y, e.g. 2; can be <= 0 for an empty aligned box
  int64_t grid_w;
  int64_t count;   // max(grid_h * grid_w, 1): the divisor of the bin mean
  bool h_clamped;  // aligned=False forced roi_h to 1: the size no longer depends on the box
  bool w_clamped;
};

// The batch column is a float; it is valid when truncation lands in [0, n), i.e. -1 < b < n (NaN is not).
template <typename T>
IMPLS_HOST_DEVICE bool roi_batch_valid(T b, int64_t n) {
  return b > static_cast<T>(-1) && b < static_cast<T>(n);
}

// roi = (batch, x1, y1, x2, y2), already in T.
template <typename T>
IMPLS_HOST_DEVICE RoiGeometry<T> roi_geometry(T x1, T y1, T x2, T y2, T spatial_scale, int64_t pooled_height,
                                              int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  const T offset = aligned ? static_cast<T>(0.5) : static_cast<T>(0);
  RoiGeometry<T> g;
  g.x_start = x1 * spatial_scale - offset;
  g.y_start = y1 * spatial_scale - offset;
  T roi_w = x2 * spatial_scale - offset - g.x_start;
  T roi_h = y2 * spatial_scale - offset - g.y_start;
  g.h_clamped = false;
  g.w_clamped = false;
  if (!aligned) {
    // torchvision forces malformed boxes to 1x1.
    if (roi_w < static_cast<T>(1)) {
      roi_w = static_cast<T>(1);
      g.w_clamped = true;
    }
    if (roi_h < static_cast<T>(1)) {
      roi_h = static_cast<T>(1);
      g.h_clamped = true;
    }
  }
  g.bin_h = roi_h / static_cast<T>(pooled_height);
  g.bin_w = roi_w / static_cast<T>(pooled_width);
  g.grid_h = sampling_ratio > 0 ? sampling_ratio
                                : static_cast<int64_t>(ceil_(roi_h / static_cast<T>(pooled_height)));
  g.grid_w = sampling_ratio > 0 ? sampling_ratio
                                : static_cast<int64_t>(ceil_(roi_w / static_cast<T>(pooled_width)));
  const int64_t n = g.grid_h * g.grid_w;
  g.count = n > 1 ? n : 1;
  return g;
}

// Sample i of `grid` in bin p.
template <typename T>
IMPLS_HOST_DEVICE T roi_sample(T start, int64_t p, T bin_size, int64_t i, int64_t grid) {
  return start + static_cast<T>(p) * bin_size + (static_cast<T>(i) + static_cast<T>(0.5)) * bin_size /
                                                     static_cast<T>(grid);
}

// Where sample i of bin p sits along the box, 0 at its start and 1 at its end: d sample / d end (per unit scale).
template <typename T>
IMPLS_HOST_DEVICE T roi_position(int64_t p, int64_t i, int64_t grid, int64_t pooled, bool clamped) {
  if (clamped) return static_cast<T>(0);
  return (static_cast<T>(p) + (static_cast<T>(i) + static_cast<T>(0.5)) / static_cast<T>(grid)) /
         static_cast<T>(pooled);
}

// One axis of torchvision's range test: a sample outside [-1, size] contributes 0. NaN compares false.
template <typename T>
IMPLS_HOST_DEVICE bool roi_in_range(T v, int64_t size) {
  return static_cast<T>(-1) <= v && v <= static_cast<T>(size);
}

// torchvision's clamp of one in-range coordinate.
template <typename T>
struct RoiCorner {
  int64_t low;
  int64_t high;
  T frac;      // l: weight of `high`; the weight of `low` is 1 - l
  bool moves;  // false where the coordinate was clamped: its derivative with respect to the box is 0
};

template <typename T>
IMPLS_HOST_DEVICE RoiCorner<T> roi_corner(T v, int64_t size) {
  RoiCorner<T> r;
  r.moves = true;
  if (v <= static_cast<T>(0)) {
    v = static_cast<T>(0);
    r.moves = false;
  }
  r.low = static_cast<int64_t>(v);  // v >= 0: truncation is floor
  if (r.low >= size - 1) {
    r.low = r.high = size - 1;
    v = static_cast<T>(r.low);
    r.moves = false;
  } else {
    r.high = r.low + 1;
  }
  r.frac = v - static_cast<T>(r.low);
  return r;
}

}  // namespace impls
