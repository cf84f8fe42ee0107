// The pixels a call's boxes read, as runs of each image's rows, and the NCHW store that transposes only those: shared
// by the NCHW kernels of crop_and_resize and roi_align.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "common/cpu_common.h"

namespace impls {

// The pixels each image's boxes read, as runs of its rows: {row, first column, end column} in runs, image n's row r at
// runs[row_start[n * H + r] .. row_start[n * H + r + 1]), from the boxes' windows: window(k) gives the rectangle {y0,
// y1, x0, x1} of pixels [y0, y1) x [x0, x1) box k reads. The NCHW forwards interleave only these (crop_and_resize's
// block path; roi_align's where they are under half a plane): a copy of whole planes also copies what no box reads (P2,
// 128 boxes of 28x28 read 35% of the map's pixels); the NCHW banded image gradients transpose only these (every other
// pixel's gradient is 0; roi_align's where they are under half a band). Built from per-row counts of the windows
// opening and closing at each column, so its cost grows with the boxes' rows and the maps' pixels (fewer than 4 x the
// taps where those paths run), not with the windows' areas. order[start[n] .. start[n + 1]): image n's boxes, among K.
// box_rows[k]: the rows [y0, y1) box k reads.
struct ReadRuns {
  std::vector<std::array<int64_t, 3>> runs;
  std::vector<int64_t> row_start;
  std::vector<std::array<int64_t, 2>> box_rows;
  int64_t H;

  template <typename Window>
  ReadRuns(const std::vector<int64_t>& order, const int64_t* start, int64_t N, int64_t H, int64_t W, int64_t K,
           Window window)
      : row_start(N * H + 1, 0), box_rows(K), H(H) {
    std::vector<int32_t> opened(H * (W + 1));  // row r: windows opening at column x, minus those ending there
    for (int64_t n = 0; n < N; ++n) {
      std::fill(opened.begin(), opened.end(), 0);
      for (int64_t j = start[n]; j < start[n + 1]; ++j) {
        const int64_t k = order[j];
        const auto [y0, y1, x0, x1] = window(k);
        box_rows[k] = {y0, y1};
        if (x0 == x1) continue;
        for (int64_t r = y0; r < y1; ++r) {
          ++opened[r * (W + 1) + x0];
          --opened[r * (W + 1) + x1];
        }
      }
      for (int64_t r = 0; r < H; ++r) {
        int32_t depth = 0;
        int64_t first = -1;
        for (int64_t x = 0; x <= W; ++x) {
          depth += opened[r * (W + 1) + x];
          if (depth > 0 && first < 0) first = x;
          if (depth == 0 && first >= 0) {
            runs.push_back({r, first, x});
            first = -1;
          }
        }
        row_start[n * H + r + 1] = static_cast<int64_t>(runs.size());
      }
    }
  }

  // The runs of image n's rows [r0, r1): runs[first .. last).
  std::array<int64_t, 2> of_rows(int64_t n, int64_t r0, int64_t r1) const {
    return {row_start[n * H + r0], row_start[n * H + r1]};
  }

  // Whether runs[first .. last) hold under half of `pixels` pixels: where the boxes read that little of a plane or
  // band, roi_align's NCHW kernels copy and transpose only the runs instead of the whole.
  bool under_half(int64_t first, int64_t last, int64_t pixels) const {
    int64_t sum = 0;
    for (int64_t i = first; i < last; ++i) sum += runs[i][2] - runs[i][1];
    return sum * 2 < pixels;
  }

  // runs[first .. last) of cb planes (plane j at planes + j * plane_size, W pixels a row) copied interleaved into
  // block: pixel p's cb values at block + p * cb, each pixel's values written whole (transpose_matrix).
  template <typename S, typename T>
  void interleave(int64_t first, int64_t last, const S* planes, int64_t cb, int64_t W, int64_t plane_size,
                  T* block) const {
    for (int64_t i = first; i < last; ++i) {
      const auto [r, x0, x1] = runs[i];
      transpose_matrix(planes + r * W + x0, cb, x1 - x0, block + (r * W + x0) * cb, plane_size);
    }
  }

  // Zeroes the runs[first .. last) of a channels-last accumulator of the rows from r0 (W pixels a row, slice_c values a
  // pixel): the only pixels the boxes add into, and the only ones store_read_planes reads back.
  template <typename T>
  void zero(int64_t first, int64_t last, int64_t r0, int64_t W, int64_t slice_c, T* acc) const {
    for (int64_t i = first; i < last; ++i) {
      const auto [r, x0, x1] = runs[i];
      std::fill(acc + ((r - r0) * W + x0) * slice_c, acc + ((r - r0) * W + x1) * slice_c, T(0));
    }
  }
};

// store_planes (cpu_common.h) for a band of `pixels` pixels (rows from r0, W a row) whose accumulator holds values
// only in the runs the boxes read (read.runs[first .. last)), every other pixel's gradient being 0: those runs are
// transposed into `planes`, the rest of it zeroed, and the planes streamed alike. P2, 128 boxes of 28x28 read 35% of
// the map's pixels. With AVX-512, float planes that start on cache lines go out from registers instead
// (stream_tiles16: 16 pixels at a time, those in no run as 0, with no copy in cache; store_planes has the timings),
// by cached stores where `cached` (out0's pages fresh from the OS: pages_are_fresh).
template <typename scalar_t, typename T>
void store_read_planes(const T* acc, const ReadRuns& read, int64_t first, int64_t last, int64_t r0, int64_t W,
                       int64_t pixels, int64_t slice_c, int64_t plane_stride, scalar_t* planes, scalar_t* out0,
                       bool cached) {
#ifdef __AVX512F__
  if constexpr (std::is_same_v<T, float> && std::is_same_v<scalar_t, float>) {
    if (planes_in_lines16(slice_c, plane_stride, out0)) {
      std::vector<uint32_t> held((pixels + 15) / 16, 0);  // bit i of held[t]: pixel t * 16 + i is in a run
      for (int64_t i = first; i < last; ++i) {
        const auto [r, x0, x1] = read.runs[i];
        for (int64_t p = (r - r0) * W + x0, end = (r - r0) * W + x1; p < end;) {
          const int64_t bit = p % 16, count = std::min<int64_t>(16 - bit, end - p);
          held[p / 16] |= static_cast<uint32_t>(((uint64_t{1} << count) - 1) << bit);
          p += count;
        }
      }
      stream_tiles16(acc, pixels, slice_c, plane_stride, out0, 0, static_cast<int64_t>(held.size()), cached,
                     [&](int64_t tile) { return held[tile]; });
      return;
    }
  }
#endif
  std::fill(planes, planes + slice_c * pixels, scalar_t(0));
  for (int64_t i = first; i < last; ++i) {
    const auto [r, x0, x1] = read.runs[i];
    const int64_t p0 = (r - r0) * W + x0;
    transpose_matrix(acc + p0 * slice_c, x1 - x0, slice_c, planes + p0, 0, pixels);
  }
  stream_planes(planes, pixels, slice_c, plane_stride, out0);
}

}  // namespace impls
