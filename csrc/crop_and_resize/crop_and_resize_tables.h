// crop_and_resize's per-box sample tables, shared by the CPU kernels of both layouts.
//
// A crop's sample rows depend only on the box's y side and its columns only on its x side, so everything a kernel
// needs about row py (or column px) of box k is computed once per call into a table and reused for every channel.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "common/bilinear.h"
#include "common/read_runs.h"

namespace impls {

// One row (or column) of a crop: everything the kernels need about sample i of one box side.
template <typename T>
struct CropAxis {
  bool valid;       // inside [0, size - 1]; else the sample is extrapolation_value
  int64_t lo;       // floor: top / left pixel
  int64_t hi;       // ceil: bottom / right pixel
  int64_t nearest;  // round half away from zero
  T lerp;
  T d_lo;  // d coordinate / d box side start (y1 or x1)
  T d_hi;  // d coordinate / d box side end (y2 or x2)
};

// The pixels [first, last + 1) that the valid samples of one box side read (its `count` table entries: lo and hi,
// or nearest), [0, 0) when none is valid.
template <typename T>
std::array<int64_t, 2> axis_span(const CropAxis<T>* tab, int64_t count, bool nearest) {
  int64_t first = INT64_MAX, last = -1;
  for (int64_t i = 0; i < count; ++i) {
    if (!tab[i].valid) continue;
    first = std::min(first, nearest ? tab[i].nearest : std::min(tab[i].lo, tab[i].hi));
    last = std::max(last, nearest ? tab[i].nearest : std::max(tab[i].lo, tab[i].hi));
  }
  return last < 0 ? std::array<int64_t, 2>{0, 0} : std::array<int64_t, 2>{first, last + 1};
}

// tables[k * crop + i] for box side [lo_col, hi_col] of every box.
template <typename scalar_t, typename T>
std::vector<CropAxis<T>> crop_axis_tables(const scalar_t* boxes, int64_t num_boxes, int lo_col, int hi_col,
                                          int64_t crop, int64_t size) {
  std::vector<CropAxis<T>> table(num_boxes * crop);
  for (int64_t k = 0; k < num_boxes; ++k) {
    const T lo = static_cast<T>(boxes[k * 4 + lo_col]);
    const T hi = static_cast<T>(boxes[k * 4 + hi_col]);
    for (int64_t i = 0; i < crop; ++i) {
      CropAxis<T>& a = table[k * crop + i];
      const T v = crop_coordinate<T>(lo, hi, i, crop, size);
      a.valid = !crop_out_of_range(v, size);
      if (!a.valid) continue;  // a NaN or far-away coordinate never reaches floor/int conversion
      const CropTap<T> tap = crop_tap(v);
      a.lo = tap.lo;
      a.hi = tap.hi;
      a.lerp = tap.lerp;
      a.nearest = round_half_away(v);
      crop_coordinate_grads<T>(i, crop, size, a.d_lo, a.d_hi);
    }
  }
  return table;
}

// The sample tables of every box: ys[k * crop_height + py], xs[k * crop_width + px].
template <typename scalar_t, typename T>
struct CropTables {
  std::vector<CropAxis<T>> ys;
  std::vector<CropAxis<T>> xs;

  CropTables(const scalar_t* boxes, int64_t K, int64_t crop_height, int64_t crop_width, int64_t H, int64_t W)
      : ys(crop_axis_tables<scalar_t, T>(boxes, K, 0, 2, crop_height, H)),
        xs(crop_axis_tables<scalar_t, T>(boxes, K, 1, 3, crop_width, W)) {}
};

// Box k's window, the pixels its valid samples read (axis_span of each side): rows [y0, y1) x columns [x0, x1) as
// {y0, y1, x0, x1}.
template <typename scalar_t, typename T>
std::array<int64_t, 4> crop_window(const CropTables<scalar_t, T>& tab, int64_t k, int64_t crop_height,
                                   int64_t crop_width, bool nearest) {
  const auto [y0, y1] = axis_span(tab.ys.data() + k * crop_height, crop_height, nearest);
  const auto [x0, x1] = axis_span(tab.xs.data() + k * crop_width, crop_width, nearest);
  return {y0, y1, x0, x1};
}

// The pixels each image's boxes read (ReadRuns), from each box's crop_window. order[start[n] .. start[n + 1]): image
// n's boxes.
template <typename scalar_t, typename T>
ReadRuns crop_read_runs(const CropTables<scalar_t, T>& tab, const std::vector<int64_t>& order,
                        const std::vector<int64_t>& start, int64_t N, int64_t H, int64_t W, int64_t crop_height,
                        int64_t crop_width, bool nearest) {
  return ReadRuns(order, start.data(), N, H, W, static_cast<int64_t>(order.size()),
                  [&](int64_t k) { return crop_window(tab, k, crop_height, crop_width, nearest); });
}

}  // namespace impls
