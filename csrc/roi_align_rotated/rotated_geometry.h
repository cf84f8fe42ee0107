// Rotated roi_align (detectron2's ROIAlignRotated): the per-box geometry and per-sample math shared by the CPU and
// CUDA kernels (CONVENTIONS.md §3b).
//
// Every expression mirrors impls/ops/roi_align_rotated/reference.py term by term and in the same evaluation order,
// so that in float64 (no FP contraction) the CPU kernels reproduce the reference bit for bit. The kernels evaluate
// the geometry in double for every dtype, as roi_align does (CONVENTIONS.md §6): only the interpolation weights
// and the position derivatives are then rounded to the math type T (float for half/bfloat16/float32).
//
// A rotated sample's row and column both depend on (iy, ix) through cos and sin, so unlike roi_align there are no
// separate row and column tables: each sample (ph, pw, iy, ix) is computed as a whole (rotated_tap), once per box.
#pragma once

#include <cstdint>

#include "common/bilinear.h"

namespace impls {

// cos/sin by overload, not std::, so the same call compiles for host and device. On the host these are the C
// library's cos/sin, the functions Python's math.cos/math.sin call: the reference gets the same bits.
IMPLS_HOST_DEVICE float cos_(float v) { return cosf(v); }
IMPLS_HOST_DEVICE double cos_(double v) { return cos(v); }
IMPLS_HOST_DEVICE float sin_(float v) { return sinf(v); }
IMPLS_HOST_DEVICE double sin_(double v) { return sin(v); }

// A rotated roi's row: (batch_index, cx, cy, w, h, angle).
constexpr int64_t kRoiColumns = 6;

// pi as a double literal (math.pi): M_PI is not standard C++ and is missing from device code on some toolchains.
constexpr double kRotatedPi = 3.14159265358979323846;

// Per-box constants. The box is (cx, cy, w, h, angle in degrees) in image pixels; everything here is in map pixels.
template <typename T>
struct RotatedGeometry {
  T cy;       // centre row: cy * spatial_scale - 0.5 (always "aligned"), e.g. cy = 10, scale 0.25: 2.0
  T cx;       // centre column, alike
  T cos_t;    // of theta = angle * pi / 180, negated when clockwise
  T sin_t;
  T start_h;  // -h_s / 2: the first bin's top edge, relative to the centre along the box's own y axis
  T start_w;
  T bin_h;    // h_s / PH
  T bin_w;
  T dtheta;   // d theta / d angle: pi / 180 per degree, negated when clockwise
  int64_t grid_h;  // samples per bin along the box's y axis: sampling_ratio, or ceil(h_s / PH) (0 when h = 0)
  int64_t grid_w;
  int64_t count;   // max(grid_h * grid_w, 1): the divisor of the bin mean, 1 for an empty grid (output 0)
};

template <typename T>
IMPLS_HOST_DEVICE RotatedGeometry<T> rotated_geometry(T cx, T cy, T w, T h, T angle, T spatial_scale,
                                                      int64_t pooled_height, int64_t pooled_width,
                                                      int64_t sampling_ratio, bool clockwise) {
  RotatedGeometry<T> g;
  g.cx = cx * spatial_scale - static_cast<T>(0.5);
  g.cy = cy * spatial_scale - static_cast<T>(0.5);
  const T w_s = w * spatial_scale;
  const T h_s = h * spatial_scale;
  T theta = angle * static_cast<T>(kRotatedPi) / static_cast<T>(180);
  g.dtheta = static_cast<T>(kRotatedPi) / static_cast<T>(180);
  if (clockwise) {
    theta = -theta;
    g.dtheta = -g.dtheta;
  }
  g.cos_t = cos_(theta);
  g.sin_t = sin_(theta);
  g.start_h = -h_s / static_cast<T>(2);
  g.start_w = -w_s / static_cast<T>(2);
  g.bin_h = h_s / static_cast<T>(pooled_height);
  g.bin_w = w_s / static_cast<T>(pooled_width);
  g.grid_h = sampling_ratio > 0 ? sampling_ratio
                                : static_cast<int64_t>(ceil_(h_s / static_cast<T>(pooled_height)));
  g.grid_w = sampling_ratio > 0 ? sampling_ratio
                                : static_cast<int64_t>(ceil_(w_s / static_cast<T>(pooled_width)));
  const int64_t n = g.grid_h * g.grid_w;
  g.count = n > 1 ? n : 1;
  return g;
}

// Sample (iy, ix) of bin (ph, pw): (yy, xx) along the box's own axes relative to its centre, and (y, x) on the map.
// e.g. a 4x4 box at 90 degrees: cos = 6e-17, sin = 1, so y = cy - xx and x = cx + yy.
template <typename T>
struct RotatedPoint {
  T yy;
  T xx;
  T y;
  T x;
};

template <typename T>
IMPLS_HOST_DEVICE RotatedPoint<T> rotated_point(const RotatedGeometry<T>& g, int64_t ph, int64_t pw, int64_t iy,
                                                int64_t ix) {
  RotatedPoint<T> p;
  p.yy = roi_sample(g.start_h, ph, g.bin_h, iy, g.grid_h);
  p.xx = roi_sample(g.start_w, pw, g.bin_w, ix, g.grid_w);
  p.y = p.yy * g.cos_t - p.xx * g.sin_t + g.cy;
  p.x = p.yy * g.sin_t + p.xx * g.cos_t + g.cx;
  return p;
}

// Sample i of bin p as a signed fraction of the box side, -0.5 at the start edge and 0.5 at the end: yy = h_s * it,
// so d yy / d h = spatial_scale * it (the grid held fixed).
template <typename T>
IMPLS_HOST_DEVICE T rotated_fraction(int64_t p, int64_t i, int64_t grid, int64_t pooled) {
  return roi_position<T>(p, i, grid, pooled, false) - static_cast<T>(0.5);
}

// One sample's bilinear taps, weights rounded to T (roi_align's rule, CONVENTIONS.md §3.3).
template <typename T>
struct RotatedTap {
  bool valid;    // inside [-1, H] x [-1, W] and the map is not empty; else the sample reads 0, has no gradient
  bool y_moves;  // not clamped along y: the box gradient flows through y (CONVENTIONS.md §3.4)
  bool x_moves;
  int64_t y_low;
  int64_t y_high;
  int64_t x_low;
  int64_t x_high;
  T ly;  // weight of y_high
  T hy;  // 1 - ly: weight of y_low
  T lx;
  T hx;
};

template <typename T>
IMPLS_HOST_DEVICE RotatedTap<T> rotated_tap(const RotatedPoint<double>& p, int64_t H, int64_t W) {
  RotatedTap<T> t{};
  t.valid = roi_in_range(p.y, H) && roi_in_range(p.x, W) && H > 0 && W > 0;
  if (!t.valid) return t;
  const RoiCorner<double> y = roi_corner(p.y, H);
  const RoiCorner<double> x = roi_corner(p.x, W);
  t.y_moves = y.moves;
  t.x_moves = x.moves;
  t.y_low = y.low;
  t.y_high = y.high;
  t.x_low = x.low;
  t.x_high = x.high;
  t.ly = static_cast<T>(y.frac);
  t.hy = static_cast<T>(1.0 - y.frac);
  t.lx = static_cast<T>(x.frac);
  t.hx = static_cast<T>(1.0 - x.frac);
  return t;
}

// d y and d x of one sample with respect to the box's w, h and angle (degrees), rounded to T; d y / d cy and
// d x / d cx are spatial_scale. With sy = scale * fraction_y and sx = scale * fraction_x:
//   y = yy cos - xx sin + cy_s:  dy/dw = -sx sin, dy/dh = sy cos, dy/dangle = -(yy sin + xx cos) * dtheta
//   x = yy sin + xx cos + cx_s:  dx/dw =  sx cos, dx/dh = sy sin, dx/dangle =  (yy cos - xx sin) * dtheta
template <typename T>
struct RotatedSlopes {
  T dy_dw;
  T dy_dh;
  T dy_da;
  T dx_dw;
  T dx_dh;
  T dx_da;
};

template <typename T>
IMPLS_HOST_DEVICE RotatedSlopes<T> rotated_slopes(const RotatedGeometry<double>& g, const RotatedPoint<double>& p,
                                                  int64_t ph, int64_t pw, int64_t iy, int64_t ix,
                                                  int64_t pooled_height, int64_t pooled_width,
                                                  double spatial_scale) {
  const double sy = spatial_scale * rotated_fraction<double>(ph, iy, g.grid_h, pooled_height);
  const double sx = spatial_scale * rotated_fraction<double>(pw, ix, g.grid_w, pooled_width);
  RotatedSlopes<T> s;
  s.dy_dw = static_cast<T>(-(sx * g.sin_t));
  s.dy_dh = static_cast<T>(sy * g.cos_t);
  s.dy_da = static_cast<T>(-(p.yy * g.sin_t + p.xx * g.cos_t) * g.dtheta);
  s.dx_dw = static_cast<T>(sx * g.cos_t);
  s.dx_dh = static_cast<T>(sy * g.sin_t);
  s.dx_da = static_cast<T>((p.yy * g.cos_t - p.xx * g.sin_t) * g.dtheta);
  return s;
}

}  // namespace impls
