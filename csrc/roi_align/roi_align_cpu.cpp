// roi_align on the CPU: torchvision's sampling rule (csrc/common/bilinear.h), mirroring
// impls/ops/roi_align/reference.py.
// Multi-level (FPN) pooling is the same kernels over a pyramid: each box carries its level, and reads that level's
// map at that level's scale; roi_align is the one-level case (every box on level 0).
//
// The sample rows (PH * grid_h per box) and columns (PW * grid_w per box) are computed once per box into
// tables: in-range flag, corner pixels, weights, and the position derivative used by the box gradient. Every
// channel then reuses them, kChannelBlock (8) channels at a time (cpu_common.h), so the per-sample work left
// per channel is 4 loads and 4 multiply-adds.
// Forward: split over (channel block, box) items in channel-block-major order, boxes grouped by image, so a
// thread's consecutive items reuse the same 16 planes (16 x 243 KB for a 200x304 P2 map; 8 for larger maps) for all
// boxes, copied once into a per-thread buffer; box-major order instead re-fetches every box's region from DRAM once
// per channel.
// Image gradient: split over (level, image, channel slice, band of rows), each walking its boxes in increasing k, so
// contributions arrive in the reference's order (deterministic, no races), into a channels-last band in L2 in either
// layout (NCHW: then transposed into the planes).
// Box gradient: split over box ranges; a range walks channel-outer, box-inner (for locality) while each box
// still sums channel, cell, sample in the reference's order.
// Float64 equals impls/backends/reference.py bit for bit: same expressions, same order, no FP contraction (setup.py).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <type_traits>
#include <vector>

#include "common/bilinear.h"
#include "common/checks.h"
#include "common/cpu_common.h"
#include "common/read_runs.h"

namespace impls {
namespace {

// One sample row (or column) of one box.
template <typename T>
struct RoiAxis {
  bool valid;  // inside [-1, size] and the map is not empty; else the sample contributes 0
  bool moves;  // not clamped: the box gradient flows through this coordinate
  int64_t low;
  int64_t high;
  T l;          // weight of `high`
  T h;          // 1 - l: weight of `low`
  T scale_lo;   // spatial_scale * (1 - position): d sample / d box start
  T scale_hi;   // spatial_scale * position: d sample / d box end
};

// The maps' sizes and scales, one entry per pyramid level (one level for roi_align).
struct Levels {
  std::vector<int64_t> H, W;
  std::vector<double> scale;

  int64_t count() const { return static_cast<int64_t>(H.size()); }
  int64_t plane(int64_t l) const { return H[l] * W[l]; }
  int64_t largest_plane() const {
    int64_t p = 0;
    for (int64_t l = 0; l < count(); ++l) p = std::max(p, plane(l));
    return p;
  }
};

// One box: its image and level, its level's map size, its geometry (in double, see roi_axis) and where its
// samples sit in the tables.
struct RoiBox {
  int64_t n;
  int64_t level;
  int64_t H;
  int64_t W;
  RoiGeometry<double> geo;
  int64_t grid_h;  // max(geo.grid_h, 0): rows of samples per bin actually visited
  int64_t grid_w;
  int64_t y_offset;  // first row of this box in the y table
  int64_t x_offset;
};

// NB: sample positions are computed in double for every dtype (once per box and sample row or column, not per
// channel), as the reference does. Half-precision boxes often put a sample exactly on a pixel row (e.g. y = 25.0),
// where the box gradient switches from one row pair's slope to the next; in float the same sample can land at
// 24.999998 and take the other slope (15% off the float64 box gradient on a float16 P2 box).
template <typename T>
RoiAxis<T> roi_axis(double start, int64_t p, double bin, int64_t i, int64_t grid, int64_t pooled, bool clamped,
                    int64_t size, double spatial_scale) {
  RoiAxis<T> a{};
  const double v = roi_sample(start, p, bin, i, grid);
  a.valid = roi_in_range(v, size) && size > 0;
  if (!a.valid) return a;
  const RoiCorner<double> corner = roi_corner(v, size);
  a.moves = corner.moves;
  a.low = corner.low;
  a.high = corner.high;
  a.l = static_cast<T>(corner.frac);
  a.h = static_cast<T>(1.0 - corner.frac);
  const double pos = roi_position<double>(p, i, grid, pooled, clamped);
  a.scale_lo = static_cast<T>(spatial_scale * (1.0 - pos));
  a.scale_hi = static_cast<T>(spatial_scale * pos);
  return a;
}

// Per-box geometry and the sample tables of all boxes. Checks every box's batch column before any read.
template <typename scalar_t, typename T>
struct RoiTables {
  std::vector<RoiBox> boxes;
  std::vector<RoiAxis<T>> ys;
  std::vector<RoiAxis<T>> xs;

  // levels: each box's level in [0, lv.count()), or nullptr for one level.
  RoiTables(const scalar_t* rois, const int64_t* levels, int64_t K, int64_t N, const Levels& lv, int64_t PH,
            int64_t PW, int64_t sampling_ratio, bool aligned) {
    boxes.resize(K);
    int64_t y_rows = 0, x_rows = 0;
    for (int64_t k = 0; k < K; ++k) {
      const scalar_t* r = rois + k * 5;
      const double b = static_cast<double>(r[0]);
      TORCH_CHECK(roi_batch_valid(b, N), "rois[", k, ", 0] = ", b,
                  " is not a batch index in [0, ", N, ")");
      const int64_t level = levels == nullptr ? 0 : levels[k];
      TORCH_CHECK(level >= 0 && level < lv.count(), "levels[", k, "] = ", level, " is not a level in [0, ",
                  lv.count(), ")");
      if (sampling_ratio <= 0) {
        // The adaptive grid is ceil(box size / output size) samples: it needs a finite box.
        for (int j = 1; j < 5; ++j) {
          TORCH_CHECK(std::isfinite(static_cast<double>(r[j])), "rois[", k, "] must be finite with adaptive ",
                      "sampling (sampling_ratio <= 0)");
        }
      }
      RoiBox& box = boxes[k];
      box.n = static_cast<int64_t>(b);
      box.level = level;
      box.H = lv.H[level];
      box.W = lv.W[level];
      box.geo = roi_geometry<double>(static_cast<double>(r[1]), static_cast<double>(r[2]),
                                     static_cast<double>(r[3]), static_cast<double>(r[4]), lv.scale[level], PH,
                                     PW, sampling_ratio, aligned);
      box.grid_h = std::max<int64_t>(box.geo.grid_h, 0);
      box.grid_w = std::max<int64_t>(box.geo.grid_w, 0);
      box.y_offset = y_rows;
      box.x_offset = x_rows;
      y_rows += PH * box.grid_h;
      x_rows += PW * box.grid_w;
    }
    ys.resize(y_rows);
    xs.resize(x_rows);
    at::parallel_for(0, K, 16, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const RoiBox& box = boxes[k];
        const RoiGeometry<double>& g = box.geo;
        const double scale = lv.scale[box.level];
        for (int64_t ph = 0; ph < PH; ++ph)
          for (int64_t iy = 0; iy < box.grid_h; ++iy)
            ys[box.y_offset + ph * box.grid_h + iy] =
                roi_axis<T>(g.y_start, ph, g.bin_h, iy, g.grid_h, PH, g.h_clamped, box.H, scale);
        for (int64_t pw = 0; pw < PW; ++pw)
          for (int64_t ix = 0; ix < box.grid_w; ++ix)
            xs[box.x_offset + pw * box.grid_w + ix] =
                roi_axis<T>(g.x_start, pw, g.bin_w, ix, g.grid_w, PW, g.w_clamped, box.W, scale);
      }
    });
  }

  // Boxes grouped by (level, image), each group in increasing k: group level * N + n is
  // order[start[group] .. start[group + 1]). Walking a group in this order keeps the reference's order.
  void by_level_and_image(int64_t N, int64_t L, std::vector<int64_t>& order, std::vector<int64_t>& start) const {
    const int64_t K = static_cast<int64_t>(boxes.size());
    std::vector<int64_t> group(K);
    for (int64_t k = 0; k < K; ++k) group[k] = boxes[k].level * N + boxes[k].n;
    boxes_by_image(group.data(), K, L * N, order, start);
  }
};

// Output (k, c0 .. c0 + CB) for one box: CB planes, CB outputs per cell. Channel j of pixel o is
// plane0[j * plane_size + o], or, interleaved (kInterleaved: the planes copied to a buffer of T beforehand, see
// roi_forward_planes), plane0[o * CB + j]: then a tap's CB channels are one contiguous, vectorizable run.
template <int64_t CB, bool kInterleaved, typename src_t, typename scalar_t, typename T>
void roi_forward_block(const RoiTables<scalar_t, T>& tab, const RoiBox& box, const src_t* plane0,
                       int64_t plane_size, int64_t W, int64_t PH, int64_t PW, scalar_t* dst0,
                       int64_t dst_stride) {
  const int64_t channel_step = kInterleaved ? 1 : plane_size, pixel_step = kInterleaved ? CB : 1;
  const T count = static_cast<T>(box.geo.count);
  for (int64_t ph = 0; ph < PH; ++ph) {
    const RoiAxis<T>* yrow = tab.ys.data() + box.y_offset + ph * box.grid_h;
    for (int64_t pw = 0; pw < PW; ++pw) {
      const RoiAxis<T>* xrow = tab.xs.data() + box.x_offset + pw * box.grid_w;
      T acc[CB] = {};
      for (int64_t iy = 0; iy < box.grid_h; ++iy) {
        const RoiAxis<T>& y = yrow[iy];
        if (!y.valid) continue;
        const int64_t low = y.low * W, high = y.high * W;
        for (int64_t ix = 0; ix < box.grid_w; ++ix) {
          const RoiAxis<T>& x = xrow[ix];
          if (!x.valid) continue;
          const T w1 = y.h * x.h, w2 = y.h * x.l, w3 = y.l * x.h, w4 = y.l * x.l;
          const int64_t o1 = (low + x.low) * pixel_step, o2 = (low + x.high) * pixel_step;
          const int64_t o3 = (high + x.low) * pixel_step, o4 = (high + x.high) * pixel_step;
          for (int64_t j = 0; j < CB; ++j) {
            const src_t* p = plane0 + j * channel_step;
            acc[j] += w1 * static_cast<T>(p[o1]) + w2 * static_cast<T>(p[o2]) + w3 * static_cast<T>(p[o3]) +
                      w4 * static_cast<T>(p[o4]);
          }
        }
      }
      for (int64_t j = 0; j < CB; ++j) dst0[j * dst_stride + ph * PW + pw] = static_cast<scalar_t>(acc[j] / count);
    }
  }
}

// Channels last ([N, H, W, C] in memory): every tap of a sample is a run of C contiguous values, so the inner loop
// over channels is a vectorizable multiply-add of four rows, with no plane copies or transposes. Each output
// element still sums its samples in the reference's order. maps[l] is level l's map.
template <typename scalar_t, typename T>
void roi_forward_channels_last(const RoiTables<scalar_t, T>& tab, const std::vector<const scalar_t*>& maps,
                               int64_t C, int64_t PH, int64_t PW, scalar_t* out) {
  const int64_t K = static_cast<int64_t>(tab.boxes.size());
  at::parallel_for(0, K * PH, grain_for(PW * 4 * C), [&](int64_t begin, int64_t end) {
    std::vector<T> acc(C);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t k = item / PH, ph = item % PH;
      const RoiBox& box = tab.boxes[k];
      const int64_t W = box.W;
      const T count = static_cast<T>(box.geo.count);
      const scalar_t* image = maps[box.level] + box.n * box.H * W * C;
      const RoiAxis<T>* yrow = tab.ys.data() + box.y_offset + ph * box.grid_h;
      for (int64_t pw = 0; pw < PW; ++pw) {
        const RoiAxis<T>* xrow = tab.xs.data() + box.x_offset + pw * box.grid_w;
        std::fill(acc.begin(), acc.end(), T(0));
        for (int64_t iy = 0; iy < box.grid_h; ++iy) {
          const RoiAxis<T>& y = yrow[iy];
          if (!y.valid) continue;
          for (int64_t ix = 0; ix < box.grid_w; ++ix) {
            const RoiAxis<T>& x = xrow[ix];
            if (!x.valid) continue;
            const T w1 = y.h * x.h, w2 = y.h * x.l, w3 = y.l * x.h, w4 = y.l * x.l;
            const scalar_t* p1 = image + (y.low * W + x.low) * C;
            const scalar_t* p2 = image + (y.low * W + x.high) * C;
            const scalar_t* p3 = image + (y.high * W + x.low) * C;
            const scalar_t* p4 = image + (y.high * W + x.high) * C;
            for (int64_t c = 0; c < C; ++c) {
              acc[c] += w1 * static_cast<T>(p1[c]) + w2 * static_cast<T>(p2[c]) + w3 * static_cast<T>(p3[c]) +
                        w4 * static_cast<T>(p4[c]);
            }
          }
        }
        scalar_t* dst = out + ((k * PH + ph) * PW + pw) * C;
        for (int64_t c = 0; c < C; ++c) dst[c] = static_cast<scalar_t>(acc[c] / count);
      }
    }
  });
}

// One box's input gradient into a channels-last accumulator of the map's rows [r0, r1) (pixel (y, x)'s cs channels
// at acc + ((y - r0) * W + x) * cs) from its incoming gradient gk ([PH, PW, C], channels c0 .. c0 + cs): each tap on
// those rows adds (g * w) / count, as the reference, and the taps on other rows are left to their band; with a
// power-of-two count (sampling_ratio 2: 4) a multiplication by the exact reciprocal gives the same bits without a
// division.
template <bool kPow2, typename scalar_t, typename T>
void roi_input_grad_box_channels_last(const RoiTables<scalar_t, T>& tab, const RoiBox& box, const scalar_t* gk,
                                      int64_t C, int64_t cs, int64_t PH, int64_t PW, int64_t r0, int64_t r1,
                                      T* acc) {
  const int64_t W = box.W, step = cs;
  const T count = static_cast<T>(box.geo.count);
  const T inv = static_cast<T>(1) / count;
  const auto share = [&](T gw) { return kPow2 ? gw * inv : gw / count; };
  for (int64_t ph = 0; ph < PH; ++ph) {
    const RoiAxis<T>* yrow = tab.ys.data() + box.y_offset + ph * box.grid_h;
    for (int64_t pw = 0; pw < PW; ++pw) {
      const RoiAxis<T>* xrow = tab.xs.data() + box.x_offset + pw * box.grid_w;
      const scalar_t* gv = gk + (ph * PW + pw) * C;
      for (int64_t iy = 0; iy < box.grid_h; ++iy) {
        const RoiAxis<T>& y = yrow[iy];
        const bool low_in = y.low >= r0 && y.low < r1, high_in = y.high >= r0 && y.high < r1;
        if (!y.valid || !(low_in || high_in)) continue;
        for (int64_t ix = 0; ix < box.grid_w; ++ix) {
          const RoiAxis<T>& x = xrow[ix];
          if (!x.valid) continue;
          const T w1 = y.h * x.h, w2 = y.h * x.l, w3 = y.l * x.h, w4 = y.l * x.l;
          T* a1 = acc + ((y.low - r0) * W + x.low) * step;
          T* a2 = acc + ((y.low - r0) * W + x.high) * step;
          T* a3 = acc + ((y.high - r0) * W + x.low) * step;
          T* a4 = acc + ((y.high - r0) * W + x.high) * step;
          // One loop per corner: two corners on the same pixel then add in the reference's order.
          if (low_in) {
            for (int64_t c = 0; c < cs; ++c) a1[c] += share(static_cast<T>(gv[c]) * w1);
            for (int64_t c = 0; c < cs; ++c) a2[c] += share(static_cast<T>(gv[c]) * w2);
          }
          if (high_in) {
            for (int64_t c = 0; c < cs; ++c) a3[c] += share(static_cast<T>(gv[c]) * w3);
            for (int64_t c = 0; c < cs; ++c) a4[c] += share(static_cast<T>(gv[c]) * w4);
          }
        }
      }
    }
  }
}

// Each box's pixels [y0, y1) x [x0, x1) that its valid samples tap ({y0, y0, x0, x0}: none), by box index.
template <typename scalar_t, typename T>
std::vector<std::array<int64_t, 4>> tapped_windows(const RoiTables<scalar_t, T>& tab, int64_t PH, int64_t PW) {
  const auto span = [](const RoiAxis<T>* axis, int64_t count) {
    int64_t first = INT64_MAX, last = -1;
    for (int64_t i = 0; i < count; ++i) {
      if (!axis[i].valid) continue;
      first = std::min(first, axis[i].low);
      last = std::max(last, axis[i].high);
    }
    return last < 0 ? std::array<int64_t, 2>{0, 0} : std::array<int64_t, 2>{first, last + 1};
  };
  std::vector<std::array<int64_t, 4>> windows;
  for (const RoiBox& box : tab.boxes) {
    const auto [y0, y1] = span(tab.ys.data() + box.y_offset, PH * box.grid_h);
    const auto [x0, x1] = span(tab.xs.data() + box.x_offset, PW * box.grid_w);
    windows.push_back(y0 == y1 || x0 == x1 ? std::array<int64_t, 4>{y0, y0, x0, x0}
                                           : std::array<int64_t, 4>{y0, y1, x0, x1});
  }
  return windows;
}

// Each level's pixels that the boxes read: ReadRuns over that level's images, from the boxes' tapped windows (order
// and start: by_level_and_image).
inline std::vector<ReadRuns> read_runs_by_level(const Levels& lv, const std::vector<int64_t>& order,
                                                const std::vector<int64_t>& start, int64_t N,
                                                const std::vector<std::array<int64_t, 4>>& windows) {
  std::vector<ReadRuns> read;
  for (int64_t l = 0; l < lv.count(); ++l) {
    read.emplace_back(order, start.data() + l * N, N, lv.H[l], lv.W[l], static_cast<int64_t>(windows.size()),
                      [&](int64_t k) { return windows[k]; });
  }
  return read;
}

// Bytes of a band's channels-last accumulator: it stays in L2 while the band's taps add into it.
constexpr int64_t kRoiGradBandBytes = 512 << 10;

// Input gradient: split over (level, image, channel slice, band of rows). Each task accumulates its band's
// [rows, W, slice] channels last in a zeroed per-thread scratch that stays in L2, walking its level's and image's boxes
// that tap the band in increasing k and adding their taps on its rows in the reference's order (deterministic, no
// two threads write the same element), then writes the band once: into a channels_last gradient with
// store_channels_last (non-temporal stores where each pixel's slice is whole cache lines), into an NCHW one
// (`planes`) transposed into the band's rows of each plane and streamed (store_planes). The gradient is never zeroed
// first and then read back for every add, and each tap's slice is one contiguous run of the scratch, where NCHW
// planes would take one scattered read-modify-write per channel. Half types accumulate in float and are rounded once.
// Every element of `grads` is written. g is the incoming gradient in the gradients' layout ([K, PH, PW, C] channels
// last, [K, C, PH, PW] in NCHW, a box's slice then transposed to [PH, PW, slice] first); grads[l] is level l's, and
// fresh[l] says its pages are fresh from the OS (pages_are_fresh): its NCHW planes are then stored through the cache.
// On 2 Xeon (Emerald Rapids) cores, 7971157 and this choice alternated in one process, 4 rounds, each gradient alive
// until the next call returns, bit-equal: under glibc (each P2 gradient mapped anew) the NCHW input gradient of P2
// 512 x 7x7 took 13.7 -> 9.9 ms, 128 x 14x14 14.4 -> 10.0 ms; under mimalloc (pages handed back) 7.4 and 7.5 ms both.
template <typename scalar_t, typename T>
void roi_input_grad_banded(const RoiTables<scalar_t, T>& tab, const Levels& lv, const scalar_t* g, int64_t N,
                           int64_t C, int64_t PH, int64_t PW, bool planes, const std::vector<scalar_t*>& grads,
                           const std::vector<bool>& fresh) {
  const int64_t L = lv.count(), cells = PH * PW;
  std::vector<int64_t> order, start;
  tab.by_level_and_image(N, L, order, start);
  const std::vector<std::array<int64_t, 4>> windows = tapped_windows(tab, PH, PW);
  // NCHW: each level's pixels that the boxes read, the only ones whose accumulators are zeroed, added into and
  // transposed.
  const std::vector<ReadRuns> read =
      planes ? read_runs_by_level(lv, order, start, N, windows) : std::vector<ReadRuns>();
  const int64_t slice = std::min<int64_t>(C, 64), slices = (C + slice - 1) / slice;
  // Tasks: (level, image, slice, band), bands of `band_rows[l]` rows, level l's first task at first_task[l].
  std::vector<int64_t> band_rows(L), bands(L), first_task(L + 1, 0);
  for (int64_t l = 0; l < L; ++l) {
    const int64_t row_bytes = lv.W[l] * slice * static_cast<int64_t>(sizeof(T));
    band_rows[l] = std::max<int64_t>(1, kRoiGradBandBytes / std::max<int64_t>(1, row_bytes));
    bands[l] = (lv.H[l] + band_rows[l] - 1) / band_rows[l];
    first_task[l + 1] = first_task[l] + N * slices * bands[l];
  }
  at::parallel_for(0, first_task[L], 1, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch;
    std::vector<scalar_t> gt(planes ? cells * slice : 0);  // a box's incoming slice, channels last (NCHW)
    std::vector<scalar_t> transposed;                       // the band's planes, before they are streamed (NCHW)
    for (int64_t task = begin; task < end; ++task) {
      const int64_t level = std::upper_bound(first_task.begin(), first_task.end(), task) - first_task.begin() - 1;
      const int64_t local = task - first_task[level];
      const int64_t n = local / (slices * bands[level]), c0 = local / bands[level] % slices * slice;
      const int64_t r0 = local % bands[level] * band_rows[level], r1 = std::min(lv.H[level], r0 + band_rows[level]);
      const int64_t W = lv.W[level], cs = std::min(slice, C - c0), group = level * N + n, pixels = (r1 - r0) * W;
      std::array<int64_t, 2> runs{};  // the band's runs in read[level] (NCHW, where they hold under half its pixels)
      bool sparse = false;
      if (planes) {
        runs = read[level].of_rows(n, r0, r1);
        sparse = read[level].under_half(runs[0], runs[1], pixels);
      }
      if (sparse) {
        scratch.resize(pixels * cs);
        read[level].zero(runs[0], runs[1], r0, W, cs, scratch.data());
      } else {
        scratch.assign(pixels * cs, T(0));
      }
      for (int64_t j = start[group]; j < start[group + 1]; ++j) {
        const int64_t k = order[j];
        if (windows[k][1] <= r0 || windows[k][0] >= r1) continue;  // no tap on the band's rows
        const RoiBox& box = tab.boxes[k];
        const int64_t count = box.geo.count;
        const scalar_t* gk = g + k * cells * C + c0;
        int64_t stride = C;
        if (planes) {
          transpose_matrix(g + (k * C + c0) * cells, cs, cells, gt.data());
          gk = gt.data();
          stride = cs;
        }
        if ((count & (count - 1)) == 0) {
          roi_input_grad_box_channels_last<true>(tab, box, gk, stride, cs, PH, PW, r0, r1, scratch.data());
        } else {
          roi_input_grad_box_channels_last<false>(tab, box, gk, stride, cs, PH, PW, r0, r1, scratch.data());
        }
      }
      const int64_t plane_size = lv.plane(level);
      if (planes) {
        transposed.resize(pixels * cs);
        scalar_t* out0 = grads[level] + (n * C + c0) * plane_size + r0 * W;
        if (sparse) {
          store_read_planes(scratch.data(), read[level], runs[0], runs[1], r0, W, pixels, cs, plane_size,
                            transposed.data(), out0, /*cached=*/fresh[level]);
        } else {
          store_planes(scratch.data(), pixels, cs, plane_size, transposed.data(), out0, /*cached=*/fresh[level]);
        }
      } else {
        store_channels_last(scratch.data(), pixels, cs, C, grads[level] + (n * plane_size + r0 * W) * C + c0);
      }
    }
#ifdef __AVX2__
    _mm_sfence();  // the streamed stores are visible before the task ends
#endif
  });
}

// roi_forward_block for a block of cb channels: kPlanesPerBlock, kChannelBlock or 1.
template <bool kInterleaved, typename src_t, typename scalar_t, typename T>
void roi_forward_channels(int64_t cb, const RoiTables<scalar_t, T>& tab, const RoiBox& box, const src_t* plane0,
                          int64_t plane_size, int64_t PH, int64_t PW, scalar_t* dst0, int64_t cells) {
  if (cb == kPlanesPerBlock) {
    roi_forward_block<kPlanesPerBlock, kInterleaved>(tab, box, plane0, plane_size, box.W, PH, PW, dst0, cells);
  } else if (cb == kChannelBlock) {
    roi_forward_block<kChannelBlock, kInterleaved>(tab, box, plane0, plane_size, box.W, PH, PW, dst0, cells);
  } else {
    roi_forward_block<1, kInterleaved>(tab, box, plane0, plane_size, box.W, PH, PW, dst0, cells);
  }
}

// NCHW forward: split over (channel block, box) items in channel-block-major order, boxes grouped by (level, image), so
// a thread's consecutive items share the same planes. A thread copies the G planes of its current (level, image,
// channel block) into a buffer of T once, interleaved (pixel-major, G channels per pixel), when the boxes read them
// more often than their size (P2, 512 boxes, 7x7, 2x2 samples: 4 * 0.1M reads of a 61K pixel plane). Each tap is then
// one contiguous run of G values, as in channels_last, instead of G scalar loads from as many planes; the copy is one
// sequential pass that leaves the block in cache for the scattered box reads, and for half/bfloat16 it converts each
// value once instead of 4 times per sample. Same values, same results. G: planes_per_block of the largest plane
// (cpu_common.h), 16 on P2 where it was 8. On 2 Xeon (Emerald Rapids) cores under mimalloc, the kernel alone on the
// multi-level pooler's forward (2 images x 1000 boxes, 7x7, sr 2), two builds alternated in one process, 5 rounds each,
// equal outputs: 106.8 -> 54.6 ms with the host's memory contended; 32 planes per block took 63.9 ms.
// Where an image's boxes read under half of its plane (ReadRuns), only those pixels are interleaved: same cores, same
// method, memory calm: the multi-level mask head's forward (2 x 100 boxes, 14x14) 16.4 -> 11.4 ms, roi_align P2
// 128 x 7x7 3.72 -> 2.80 ms.
template <typename scalar_t, typename T>
void roi_forward_planes(const RoiTables<scalar_t, T>& tab, const Levels& lv,
                        const std::vector<const scalar_t*>& maps, int64_t N, int64_t C, int64_t PH, int64_t PW,
                        scalar_t* o) {
  const int64_t K = static_cast<int64_t>(tab.boxes.size()), L = lv.count();
  const int64_t cells = PH * PW;
  std::vector<int64_t> order, start;
  tab.by_level_and_image(N, L, order, start);
  int64_t reads = 0, pixels = 0;
  for (const RoiBox& box : tab.boxes) reads += 4 * cells * box.grid_h * box.grid_w;
  for (int64_t l = 0; l < L; ++l) pixels += N * lv.plane(l);
  const bool copy_planes = reads >= pixels;
  // The pixels the boxes read, per level and image: where they are under half a plane, only they are interleaved.
  std::vector<ReadRuns> read;
  if (copy_planes) read = read_runs_by_level(lv, order, start, N, tapped_windows(tab, PH, PW));
  const int64_t G = planes_per_block(lv.largest_plane(), sizeof(T));
  const int64_t full_blocks = C / G;  // then the C % G channels left, one block each
  at::parallel_for(0, (full_blocks + C % G) * K, grain_for(cells * 4 * G), [&](int64_t begin, int64_t end) {
    const auto block_planes = uninitialized_buffer<T>(copy_planes ? G * lv.largest_plane() : 0);
    int64_t block_key = -1;  // (level * N + n) * C + c0 of the planes in `block_planes`
    for (int64_t item = begin; item < end; ++item) {
      const int64_t k = order[item % K];
      const int64_t b = item / K;
      const int64_t c0 = b < full_blocks ? b * G : full_blocks * G + (b - full_blocks);
      const int64_t cb = b < full_blocks ? G : 1;
      const RoiBox& box = tab.boxes[k];
      const int64_t plane_size = box.H * box.W;
      const scalar_t* plane0 = maps[box.level] + (box.n * C + c0) * plane_size;
      scalar_t* dst0 = o + (k * C + c0) * cells;
      if (copy_planes) {
        const int64_t key = (box.level * N + box.n) * C + c0;
        if (block_key != key) {
          const ReadRuns& runs = read[box.level];
          const auto [first, last] = runs.of_rows(box.n, 0, box.H);
          if (runs.under_half(first, last, plane_size)) {
            runs.interleave(first, last, plane0, cb, box.W, plane_size, block_planes.get());
          } else {
            interleave_planes(plane0, cb, plane_size, block_planes.get());
          }
          block_key = key;
        }
        roi_forward_channels<true>(cb, tab, box, block_planes.get(), plane_size, PH, PW, dst0, cells);
      } else {
        roi_forward_channels<false>(cb, tab, box, plane0, plane_size, PH, PW, dst0, cells);
      }
    }
  });
}

// A pyramid's maps, in one layout (the first map's suggested one: a channels_last network stays channels last; a
// strided map is copied once here to that layout), and their sizes; the batch and channel counts are checked equal.
struct Pyramid {
  std::vector<at::Tensor> maps;
  Levels lv;
  at::MemoryFormat layout;
};

Pyramid pyramid_of(at::TensorList features_, const std::vector<double>& scales, const at::Tensor& rois,
                   int64_t pooled_height, int64_t pooled_width) {
  TORCH_CHECK(!features_.empty(), "features must hold at least one map");
  TORCH_CHECK(static_cast<int64_t>(scales.size()) == static_cast<int64_t>(features_.size()), "scales must give one ",
              "scale per map: ", features_.size(), " maps, ", scales.size(), " scales");
  Pyramid p;
  p.layout = features_[0].suggest_memory_format();
  for (size_t l = 0; l < features_.size(); ++l) {
    const at::Tensor& f = features_[l];
    check_roi_align(f, "features[l]", rois, pooled_height, pooled_width, c10::DeviceType::CPU);
    check_same(f, features_[0], "features[l]", "features[0]");
    TORCH_CHECK(f.size(0) == features_[0].size(0) && f.size(1) == features_[0].size(1), "features[", l,
                "] must have the N and C of features[0]: ", f.sizes(), " vs ", features_[0].sizes());
    p.maps.push_back(f.contiguous(p.layout));
    p.lv.H.push_back(f.size(2));
    p.lv.W.push_back(f.size(3));
    p.lv.scale.push_back(scales[l]);
  }
  return p;
}

at::Tensor pyramid_forward(at::TensorList features_, const at::Tensor& rois_, const at::Tensor& levels,
                                  const std::vector<double>& scales, int64_t pooled_height, int64_t pooled_width,
                                  int64_t sampling_ratio, bool aligned) {
  const Pyramid p = pyramid_of(features_, scales, rois_, pooled_height, pooled_width);
  const at::Tensor rois = rois_.contiguous();
  const int64_t N = p.maps[0].size(0), C = p.maps[0].size(1);
  const int64_t K = rois.size(0), PH = pooled_height, PW = pooled_width;
  at::Tensor out = at::empty({K, C, PH, PW}, p.maps[0].options().memory_format(p.layout));
  if (out.numel() > 0) advise_huge_pages(out);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.maps[0].scalar_type(), "roi_align_forward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const RoiTables<scalar_t, T> tab(rois.const_data_ptr<scalar_t>(), levels_ptr(levels), K, N, p.lv,
                                     PH, PW, sampling_ratio, aligned);
    if (out.numel() == 0) return;
    std::vector<const scalar_t*> maps;
    for (const at::Tensor& m : p.maps) maps.push_back(m.const_data_ptr<scalar_t>());
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    if (p.layout == at::MemoryFormat::ChannelsLast) {
      roi_forward_channels_last(tab, maps, C, PH, PW, o);
    } else {
      roi_forward_planes(tab, p.lv, maps, N, C, PH, PW, o);
    }
  });
  return out;
}

std::vector<at::Tensor> pyramid_backward_input(const at::Tensor& grad_, const at::Tensor& rois_,
                                                      const at::Tensor& levels, const std::vector<double>& scales,
                                                      int64_t pooled_height, int64_t pooled_width, int64_t N,
                                                      int64_t C, at::IntArrayRef heights, at::IntArrayRef widths,
                                                      int64_t sampling_ratio, bool aligned) {
  check_roi_align(grad_, "grad", rois_, pooled_height, pooled_width, c10::DeviceType::CPU);
  check_grad(grad_, rois_.size(0), C, pooled_height, pooled_width);
  TORCH_CHECK(heights.size() == scales.size() && widths.size() == scales.size() && !scales.empty(),
              "heights, widths and scales must give one entry per map, got ", heights.size(), ", ", widths.size(),
              " and ", scales.size());
  Levels lv;
  for (size_t l = 0; l < scales.size(); ++l) {
    check_input_sizes(N, C, heights[l], widths[l]);
    lv.H.push_back(heights[l]);
    lv.W.push_back(widths[l]);
    lv.scale.push_back(scales[l]);
  }
  // The input gradients take the incoming gradient's layout: channels_last in a channels_last network.
  const at::MemoryFormat layout = grad_.suggest_memory_format();
  const at::Tensor rois = rois_.contiguous();
  const at::Tensor grad = grad_.contiguous(layout);
  const int64_t K = rois.size(0), PH = pooled_height, PW = pooled_width;
  std::vector<at::Tensor> grads;
  std::vector<bool> fresh;  // each gradient's pages fresh from the OS, before its first touch (pages_are_fresh)
  // Empty in the layout, advised huge pages before its first touch (at::zeros takes no memory format); zeroed here
  // only when there is nothing to compute: roi_input_grad_banded writes every element.
  const bool written = K > 0 && C > 0;
  for (int64_t l = 0; l < lv.count(); ++l) {
    at::Tensor g = at::empty({N, C, lv.H[l], lv.W[l]}, grad.options().memory_format(layout));
    fresh.push_back(pages_are_fresh(g));
    advise_huge_pages(g);
    grads.push_back(written ? g : g.zero_());
  }

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_backward_input_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const RoiTables<scalar_t, T> tab(rois.const_data_ptr<scalar_t>(), levels_ptr(levels), K, N, lv, PH,
                                     PW, sampling_ratio, aligned);
    if (K == 0 || C == 0) return;
    std::vector<scalar_t*> outs;
    for (at::Tensor& t : grads) outs.push_back(t.mutable_data_ptr<scalar_t>());
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    roi_input_grad_banded(tab, lv, g, N, C, PH, PW, layout != at::MemoryFormat::ChannelsLast, outs, fresh);
  });
  return grads;
}

at::Tensor pyramid_backward_boxes(const at::Tensor& grad_, at::TensorList features_, const at::Tensor& rois_,
                                         const at::Tensor& levels, const std::vector<double>& scales,
                                         int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                         bool aligned) {
  const Pyramid p = pyramid_of(features_, scales, rois_, pooled_height, pooled_width);
  check_same(grad_, features_[0], "grad", "features[0]");
  check_grad(grad_, rois_.size(0), features_[0].size(1), pooled_height, pooled_width);
  std::vector<at::Tensor> maps;  // NCHW: one copy of a channels_last or strided map, as in the forward
  for (const at::Tensor& f : features_) maps.push_back(f.contiguous());
  const at::Tensor rois = rois_.contiguous();
  const at::Tensor grad = grad_.contiguous();
  const int64_t N = maps[0].size(0), C = maps[0].size(1);
  const int64_t K = rois.size(0), PH = pooled_height, PW = pooled_width;
  at::Tensor grad_rois = at::zeros({K, 5}, rois.options());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, maps[0].scalar_type(), "roi_align_backward_boxes_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const RoiTables<scalar_t, T> tab(rois.const_data_ptr<scalar_t>(), levels_ptr(levels), K, N, p.lv,
                                     PH, PW, sampling_ratio, aligned);
    if (K == 0 || C == 0) return;
    std::vector<const scalar_t*> imgs;
    for (const at::Tensor& m : maps) imgs.push_back(m.const_data_ptr<scalar_t>());
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const int64_t cells = PH * PW;
    scalar_t* gr = grad_rois.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, K, grain_for(C * cells * 4), [&](int64_t begin, int64_t end) {
      std::vector<std::array<T, 4>> sums(end - begin, {T(0), T(0), T(0), T(0)});  // d x1, d y1, d x2, d y2
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t k = begin; k < end; ++k) {
          const RoiBox& box = tab.boxes[k];
          const int64_t W = box.W;
          const T count = static_cast<T>(box.geo.count);
          T d_x1 = sums[k - begin][0], d_y1 = sums[k - begin][1];
          T d_x2 = sums[k - begin][2], d_y2 = sums[k - begin][3];
          const scalar_t* plane = imgs[box.level] + (box.n * C + c) * box.H * W;
          const scalar_t* gk = g + (k * C + c) * cells;
          for (int64_t ph = 0; ph < PH; ++ph) {
            const RoiAxis<T>* yrow = tab.ys.data() + box.y_offset + ph * box.grid_h;
            for (int64_t pw = 0; pw < PW; ++pw) {
              const RoiAxis<T>* xrow = tab.xs.data() + box.x_offset + pw * box.grid_w;
              const T gv = static_cast<T>(gk[ph * PW + pw]);
              for (int64_t iy = 0; iy < box.grid_h; ++iy) {
                const RoiAxis<T>& y = yrow[iy];
                if (!y.valid) continue;
                const scalar_t* row_low = plane + y.low * W;
                const scalar_t* row_high = plane + y.high * W;
                for (int64_t ix = 0; ix < box.grid_w; ++ix) {
                  const RoiAxis<T>& x = xrow[ix];
                  if (!x.valid) continue;
                  const T v1 = static_cast<T>(row_low[x.low]), v2 = static_cast<T>(row_low[x.high]);
                  const T v3 = static_cast<T>(row_high[x.low]), v4 = static_cast<T>(row_high[x.high]);
                  if (y.moves) {
                    const T gy = gv * (x.h * (v3 - v1) + x.l * (v4 - v2)) / count;
                    d_y1 += gy * y.scale_lo;
                    d_y2 += gy * y.scale_hi;
                  }
                  if (x.moves) {
                    const T gx = gv * (y.h * (v2 - v1) + y.l * (v4 - v3)) / count;
                    d_x1 += gx * x.scale_lo;
                    d_x2 += gx * x.scale_hi;
                  }
                }
              }
            }
          }
          sums[k - begin] = {d_x1, d_y1, d_x2, d_y2};
        }
      }
      // Column 0 (the batch index) gets no gradient.
      for (int64_t k = begin; k < end; ++k) {
        for (int j = 0; j < 4; ++j) gr[k * 5 + 1 + j] = static_cast<scalar_t>(sums[k - begin][j]);
      }
    });
  });
  return grad_rois;
}

// The operators. roi_align is the one-level case: one map, no levels tensor.

at::Tensor multiscale_roi_align_forward_cpu(at::TensorList features, const at::Tensor& rois, const at::Tensor& levels,
                                            at::ArrayRef<double> scales, int64_t pooled_height, int64_t pooled_width,
                                            int64_t sampling_ratio, bool aligned) {
  return pyramid_forward(features, rois, levels_of(levels, rois), scales.vec(), pooled_height, pooled_width,
                                sampling_ratio, aligned);
}

std::vector<at::Tensor> multiscale_roi_align_backward_input_cpu(
    const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& levels, at::ArrayRef<double> scales,
    int64_t pooled_height, int64_t pooled_width, int64_t batch_size, int64_t channels, at::IntArrayRef heights,
    at::IntArrayRef widths, int64_t sampling_ratio, bool aligned) {
  return pyramid_backward_input(grad, rois, levels_of(levels, rois), scales.vec(), pooled_height,
                                       pooled_width, batch_size, channels, heights, widths, sampling_ratio, aligned);
}

at::Tensor multiscale_roi_align_backward_boxes_cpu(const at::Tensor& grad, at::TensorList features,
                                                   const at::Tensor& rois, const at::Tensor& levels,
                                                   at::ArrayRef<double> scales, int64_t pooled_height,
                                                   int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  return pyramid_backward_boxes(grad, features, rois, levels_of(levels, rois), scales.vec(), pooled_height,
                                       pooled_width, sampling_ratio, aligned);
}

at::Tensor roi_align_forward_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                 int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  check_roi_align(input, "input", rois, pooled_height, pooled_width, c10::DeviceType::CPU);
  return pyramid_forward({input}, rois, at::Tensor(), {spatial_scale}, pooled_height, pooled_width,
                                sampling_ratio, aligned);
}

at::Tensor roi_align_backward_input_cpu(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                       int64_t pooled_height, int64_t pooled_width, int64_t N, int64_t C, int64_t H,
                                       int64_t W, int64_t sampling_ratio, bool aligned) {
  check_input_sizes(N, C, H, W);
  return pyramid_backward_input(grad, rois, at::Tensor(), {spatial_scale}, pooled_height, pooled_width, N, C,
                                       {H}, {W}, sampling_ratio, aligned)[0];
}

at::Tensor roi_align_backward_boxes_cpu(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& rois,
                                       double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                       int64_t sampling_ratio, bool aligned) {
  check_roi_align(input, "input", rois, pooled_height, pooled_width, c10::DeviceType::CPU);
  check_same(grad, input, "grad", "input");
  return pyramid_backward_boxes(grad, {input}, rois, at::Tensor(), {spatial_scale}, pooled_height,
                                       pooled_width, sampling_ratio, aligned);
}

}  // namespace

TORCH_LIBRARY_IMPL(impls, CPU, m) {
  m.impl("roi_align_forward", TORCH_FN(roi_align_forward_cpu));
  m.impl("roi_align_backward_input", TORCH_FN(roi_align_backward_input_cpu));
  m.impl("roi_align_backward_boxes", TORCH_FN(roi_align_backward_boxes_cpu));
  m.impl("multiscale_roi_align_forward", TORCH_FN(multiscale_roi_align_forward_cpu));
  m.impl("multiscale_roi_align_backward_input", TORCH_FN(multiscale_roi_align_backward_input_cpu));
  m.impl("multiscale_roi_align_backward_boxes", TORCH_FN(multiscale_roi_align_backward_boxes_cpu));
}

}  // namespace impls
