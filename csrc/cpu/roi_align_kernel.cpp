// roi_align on the CPU: torchvision's sampling rule (csrc/bilinear.h), mirroring impls/backends/reference.py.
//
// The sample rows (PH * grid_h per box) and columns (PW * grid_w per box) are computed once per box into
// tables: in-range flag, corner pixels, weights, and the position derivative used by the box gradient. Every
// channel then reuses them, kChannelBlock (8) channels at a time (cpu_common.h), so the per-sample work left
// per channel is 4 loads and 4 multiply-adds.
// Forward: split over (channel block, box) items in channel-block-major order, boxes grouped by image, so a
// thread's consecutive items reuse the same 8 planes (8 x 243 KB for a 200x304 P2 map) for all boxes, copied
// once into a per-thread buffer; box-major order instead re-fetches every box's region from DRAM once per
// channel.
// Image gradient: split over (image, channel block), each walking its image's boxes in increasing k, so
// contributions arrive in the reference's order (deterministic, no races).
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

#include "../bilinear.h"
#include "../checks.h"
#include "cpu_common.h"

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

// One box: its image, its geometry (in double, see roi_axis) and where its samples sit in the tables.
struct RoiBox {
  int64_t n;
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

  RoiTables(const scalar_t* rois, int64_t K, int64_t N, int64_t H, int64_t W, double spatial_scale_, int64_t PH,
            int64_t PW, int64_t sampling_ratio, bool aligned) {
    const double spatial_scale = spatial_scale_;
    boxes.resize(K);
    int64_t y_rows = 0, x_rows = 0;
    for (int64_t k = 0; k < K; ++k) {
      const scalar_t* r = rois + k * 5;
      const double b = static_cast<double>(r[0]);
      TORCH_CHECK(roi_batch_valid(b, N), "rois[", k, ", 0] = ", b,
                  " is not a batch index in [0, ", N, ")");
      if (sampling_ratio <= 0) {
        // The adaptive grid is ceil(box size / output size) samples: it needs a finite box.
        for (int j = 1; j < 5; ++j) {
          TORCH_CHECK(std::isfinite(static_cast<double>(r[j])), "rois[", k, "] must be finite with adaptive ",
                      "sampling (sampling_ratio <= 0)");
        }
      }
      RoiBox& box = boxes[k];
      box.n = static_cast<int64_t>(b);
      box.geo = roi_geometry<double>(static_cast<double>(r[1]), static_cast<double>(r[2]),
                                     static_cast<double>(r[3]), static_cast<double>(r[4]), spatial_scale, PH, PW,
                                     sampling_ratio, aligned);
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
        for (int64_t ph = 0; ph < PH; ++ph)
          for (int64_t iy = 0; iy < box.grid_h; ++iy)
            ys[box.y_offset + ph * box.grid_h + iy] =
                roi_axis<T>(g.y_start, ph, g.bin_h, iy, g.grid_h, PH, g.h_clamped, H, spatial_scale);
        for (int64_t pw = 0; pw < PW; ++pw)
          for (int64_t ix = 0; ix < box.grid_w; ++ix)
            xs[box.x_offset + pw * box.grid_w + ix] =
                roi_axis<T>(g.x_start, pw, g.bin_w, ix, g.grid_w, PW, g.w_clamped, W, spatial_scale);
      }
    });
  }
};

// Output (k, c0 .. c0 + CB) for one box: CB planes, CB outputs per cell. src_t is scalar_t, or T when the
// planes were copied to a buffer of T beforehand (see roi_align_forward_cpu).
template <int64_t CB, typename src_t, typename scalar_t, typename T>
void roi_forward_block(const RoiTables<scalar_t, T>& tab, const RoiBox& box, const src_t* plane0,
                       int64_t plane_size, int64_t W, int64_t PH, int64_t PW, scalar_t* dst0,
                       int64_t dst_stride) {
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
          const int64_t o1 = low + x.low, o2 = low + x.high, o3 = high + x.low, o4 = high + x.high;
          for (int64_t j = 0; j < CB; ++j) {
            const src_t* p = plane0 + j * plane_size;
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
// element still sums its samples in the reference's order.
template <typename scalar_t, typename T>
void roi_forward_channels_last(const RoiTables<scalar_t, T>& tab, const scalar_t* img, int64_t C, int64_t H,
                               int64_t W, int64_t PH, int64_t PW, scalar_t* out) {
  const int64_t K = static_cast<int64_t>(tab.boxes.size());
  at::parallel_for(0, K * PH, grain_for(PW * 4 * C), [&](int64_t begin, int64_t end) {
    std::vector<T> acc(C);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t k = item / PH, ph = item % PH;
      const RoiBox& box = tab.boxes[k];
      const T count = static_cast<T>(box.geo.count);
      const scalar_t* image = img + box.n * H * W * C;
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

// One box's input gradient into a channels-last accumulator acc (pixel p's cs channels at acc + p * step) from its
// incoming gradient gk ([PH, PW, C], channels c0 .. c0 + cs): each tap adds (g * w) / count, as the reference; with
// a power-of-two count (sampling_ratio 2: 4) a multiplication by the exact reciprocal gives the same bits without a
// division.
template <bool kPow2, typename scalar_t, typename T>
void roi_input_grad_box_channels_last(const RoiTables<scalar_t, T>& tab, const RoiBox& box, const scalar_t* gk,
                                      int64_t C, int64_t cs, int64_t W, int64_t PH, int64_t PW, T* acc,
                                      int64_t step) {
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
        if (!y.valid) continue;
        for (int64_t ix = 0; ix < box.grid_w; ++ix) {
          const RoiAxis<T>& x = xrow[ix];
          if (!x.valid) continue;
          const T w1 = y.h * x.h, w2 = y.h * x.l, w3 = y.l * x.h, w4 = y.l * x.l;
          T* a1 = acc + (y.low * W + x.low) * step;
          T* a2 = acc + (y.low * W + x.high) * step;
          T* a3 = acc + (y.high * W + x.low) * step;
          T* a4 = acc + (y.high * W + x.high) * step;
          // One loop per corner: two corners on the same pixel then add in the reference's order.
          for (int64_t c = 0; c < cs; ++c) a1[c] += share(static_cast<T>(gv[c]) * w1);
          for (int64_t c = 0; c < cs; ++c) a2[c] += share(static_cast<T>(gv[c]) * w2);
          for (int64_t c = 0; c < cs; ++c) a3[c] += share(static_cast<T>(gv[c]) * w3);
          for (int64_t c = 0; c < cs; ++c) a4[c] += share(static_cast<T>(gv[c]) * w4);
        }
      }
    }
  }
}

// Channels-last input gradient: split over (image, channel slice); each task walks its image's boxes in
// increasing k and adds every tap in the reference's order (deterministic, no two threads write the same element):
// straight into the zeroed gradient for float/double, into a float [H * W, slice] accumulator rounded once for
// half types. g is the incoming gradient, channels last too ([K, PH, PW, C]).
template <typename scalar_t, typename T>
void roi_input_grad_channels_last(const RoiTables<scalar_t, T>& tab, const scalar_t* g, int64_t N, int64_t C,
                                  int64_t H, int64_t W, int64_t PH, int64_t PW, scalar_t* grad_input) {
  const int64_t K = static_cast<int64_t>(tab.boxes.size());
  const int64_t plane_size = H * W;
  std::vector<int64_t> batch_of_box(K), order, start;
  for (int64_t k = 0; k < K; ++k) batch_of_box[k] = tab.boxes[k].n;
  boxes_by_image(batch_of_box.data(), K, N, order, start);
  // Slices of at most 64 channels, narrower when there would be fewer tasks than threads.
  const int64_t tasks_per_image = (at::get_num_threads() + N - 1) / N;
  const int64_t slice = std::clamp<int64_t>((C + tasks_per_image - 1) / tasks_per_image, 1, 64);
  const int64_t slices = (C + slice - 1) / slice;
  constexpr bool direct = std::is_same_v<scalar_t, T>;
  at::parallel_for(0, N * slices, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(direct ? 0 : plane_size * slice);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / slices, c0 = item % slices * slice;
      const int64_t cs = std::min(slice, C - c0);
      scalar_t* out0 = grad_input + n * plane_size * C + c0;
      T* acc = direct ? reinterpret_cast<T*>(out0) : scratch.data();
      const int64_t step = direct ? C : cs;
      if (!direct) std::fill(scratch.begin(), scratch.end(), T(0));
      for (int64_t j = start[n]; j < start[n + 1]; ++j) {
        const int64_t k = order[j];
        const RoiBox& box = tab.boxes[k];
        const int64_t count = box.geo.count;
        const scalar_t* gk = g + k * PH * PW * C + c0;
        if ((count & (count - 1)) == 0) {
          roi_input_grad_box_channels_last<true>(tab, box, gk, C, cs, W, PH, PW, acc, step);
        } else {
          roi_input_grad_box_channels_last<false>(tab, box, gk, C, cs, W, PH, PW, acc, step);
        }
      }
      if (direct) continue;
      for (int64_t p = 0; p < plane_size; ++p) {
        for (int64_t c = 0; c < cs; ++c) out0[p * C + c] = static_cast<scalar_t>(scratch[p * cs + c]);
      }
    }
  });
}

at::Tensor roi_align_forward_cpu(const at::Tensor& input_, const at::Tensor& rois_, double spatial_scale,
                                 int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  check_roi_align(input_, "input", rois_, pooled_height, pooled_width, c10::DeviceType::CPU);
  // A channels_last input gives a channels_last output, as conv2d does, computed channels last; a strided input
  // is copied once here (one pass over N*C*H*W) to its suggested layout.
  const at::MemoryFormat layout = input_.suggest_memory_format();
  const at::Tensor input = input_.contiguous(layout);
  const at::Tensor rois = rois_.contiguous();
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t K = rois.size(0), PH = pooled_height, PW = pooled_width;
  at::Tensor out = at::empty({K, C, PH, PW}, input.options().memory_format(layout));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_forward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const RoiTables<scalar_t, T> tab(rois.const_data_ptr<scalar_t>(), K, N, H, W, spatial_scale, PH, PW,
                                     sampling_ratio, aligned);
    if (out.numel() == 0) return;
    const scalar_t* img = input.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    if (layout == at::MemoryFormat::ChannelsLast) {
      roi_forward_channels_last(tab, img, C, H, W, PH, PW, o);
      return;
    }
    const int64_t cells = PH * PW, plane_size = H * W;
    // Boxes visited image by image (k order within an image), so a thread's consecutive items share planes.
    std::vector<int64_t> batch_of_box(K), order, start;
    for (int64_t k = 0; k < K; ++k) batch_of_box[k] = tab.boxes[k].n;
    boxes_by_image(batch_of_box.data(), K, N, order, start);
    // A thread copies the planes of its current (image, channel block) into a buffer of T once, when the boxes
    // read them more often than their size (P2, 512 boxes, 7x7, 2x2 samples: 4 * 0.1M reads of a 61K pixel
    // plane). The copy is one sequential, prefetched pass that leaves the planes in cache for the scattered
    // box reads, and for half/bfloat16 it converts each value once instead of 4 times per sample. Same values,
    // same results.
    int64_t reads = 0;
    for (const RoiBox& box : tab.boxes) reads += 4 * cells * box.grid_h * box.grid_w;
    const bool copy_planes = reads >= N * plane_size;
    at::parallel_for(0, channel_blocks(C) * K, grain_for(cells * 4 * kChannelBlock), [&](int64_t begin,
                                                                                          int64_t end) {
      std::vector<T> block_planes(copy_planes ? kChannelBlock * plane_size : 0);
      int64_t block_key = -1;  // n * C + c0 of the planes in `block_planes`
      for (int64_t item = begin; item < end; ++item) {
        const int64_t k = order[item % K];
        bool full;
        const int64_t c0 = block_start(item / K, C, full);
        const int64_t cb = full ? kChannelBlock : 1;
        const RoiBox& box = tab.boxes[k];
        const scalar_t* plane0 = img + (box.n * C + c0) * plane_size;
        scalar_t* dst0 = o + (k * C + c0) * cells;
        if (copy_planes) {
          if (block_key != box.n * C + c0) {
            std::copy(plane0, plane0 + cb * plane_size, block_planes.begin());
            block_key = box.n * C + c0;
          }
          if (full) {
            roi_forward_block<kChannelBlock>(tab, box, block_planes.data(), plane_size, W, PH, PW, dst0, cells);
          } else {
            roi_forward_block<1>(tab, box, block_planes.data(), plane_size, W, PH, PW, dst0, cells);
          }
        } else if (full) {
          roi_forward_block<kChannelBlock>(tab, box, plane0, plane_size, W, PH, PW, dst0, cells);
        } else {
          roi_forward_block<1>(tab, box, plane0, plane_size, W, PH, PW, dst0, cells);
        }
      }
    });
  });
  return out;
}

// Input gradient of one box into CB accumulator planes (acc0 + j * plane_size), taps in the reference's order.
// Each tap adds (g * w) / count. With a power-of-two count (sampling_ratio 2: 4) it multiplies by the exact
// reciprocal instead: the same correctly rounded result, without 4 divisions per sample.
template <int64_t CB, bool kPow2, typename scalar_t, typename T>
void roi_input_grad_block(const RoiTables<scalar_t, T>& tab, const RoiBox& box, const scalar_t* g0,
                          int64_t g_stride, int64_t PH, int64_t PW, int64_t W, T* acc0, int64_t plane_size) {
  const T count = static_cast<T>(box.geo.count);
  const T inv = static_cast<T>(1) / count;
  const auto share = [&](T gw) { return kPow2 ? gw * inv : gw / count; };
  for (int64_t ph = 0; ph < PH; ++ph) {
    const RoiAxis<T>* yrow = tab.ys.data() + box.y_offset + ph * box.grid_h;
    for (int64_t pw = 0; pw < PW; ++pw) {
      const RoiAxis<T>* xrow = tab.xs.data() + box.x_offset + pw * box.grid_w;
      T gv[CB];
      for (int64_t j = 0; j < CB; ++j) gv[j] = static_cast<T>(g0[j * g_stride + ph * PW + pw]);
      for (int64_t iy = 0; iy < box.grid_h; ++iy) {
        const RoiAxis<T>& y = yrow[iy];
        if (!y.valid) continue;
        const int64_t low = y.low * W, high = y.high * W;
        for (int64_t ix = 0; ix < box.grid_w; ++ix) {
          const RoiAxis<T>& x = xrow[ix];
          if (!x.valid) continue;
          const T w1 = y.h * x.h, w2 = y.h * x.l, w3 = y.l * x.h, w4 = y.l * x.l;
          const int64_t o1 = low + x.low, o2 = low + x.high, o3 = high + x.low, o4 = high + x.high;
          for (int64_t j = 0; j < CB; ++j) {
            T* a = acc0 + j * plane_size;
            a[o1] += share(gv[j] * w1);
            a[o2] += share(gv[j] * w2);
            a[o3] += share(gv[j] * w3);
            a[o4] += share(gv[j] * w4);
          }
        }
      }
    }
  }
}

template <int64_t CB, typename scalar_t, typename T>
void roi_input_grad_box(const RoiTables<scalar_t, T>& tab, const RoiBox& box, const scalar_t* g0,
                        int64_t g_stride, int64_t PH, int64_t PW, int64_t W, T* acc0, int64_t plane_size) {
  const int64_t count = box.geo.count;
  if ((count & (count - 1)) == 0) {
    roi_input_grad_block<CB, true>(tab, box, g0, g_stride, PH, PW, W, acc0, plane_size);
  } else {
    roi_input_grad_block<CB, false>(tab, box, g0, g_stride, PH, PW, W, acc0, plane_size);
  }
}

at::Tensor roi_align_backward_input_cpu(const at::Tensor& grad_, const at::Tensor& rois_, double spatial_scale,
                                       int64_t pooled_height, int64_t pooled_width, int64_t N, int64_t C, int64_t H,
                                       int64_t W, int64_t sampling_ratio, bool aligned) {
  check_roi_align(grad_, "grad", rois_, pooled_height, pooled_width, c10::DeviceType::CPU);
  check_grad(grad_, rois_.size(0), C, pooled_height, pooled_width);
  check_input_sizes(N, C, H, W);
  // The input gradient takes the incoming gradient's layout: channels_last in a channels_last network.
  const at::MemoryFormat layout = grad_.suggest_memory_format();
  const at::Tensor rois = rois_.contiguous();
  const at::Tensor grad = grad_.contiguous(layout);
  const int64_t K = rois.size(0), PH = pooled_height, PW = pooled_width;
  // (at::zeros takes no memory format: empty in the layout, then zeroed.)
  at::Tensor grad_input = at::empty({N, C, H, W}, grad.options().memory_format(layout)).zero_();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_backward_input_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const RoiTables<scalar_t, T> tab(rois.const_data_ptr<scalar_t>(), K, N, H, W, spatial_scale, PH, PW,
                                     sampling_ratio, aligned);
    if (K == 0 || C == 0 || H * W == 0) return;
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    if (layout == at::MemoryFormat::ChannelsLast) {
      roi_input_grad_channels_last(tab, g, N, C, H, W, PH, PW, grad_input.mutable_data_ptr<scalar_t>());
      return;
    }
    const int64_t plane_size = H * W;
    const int64_t cells = PH * PW;
    std::vector<int64_t> batch_of_box(K), order, start;
    for (int64_t k = 0; k < K; ++k) batch_of_box[k] = tab.boxes[k].n;
    boxes_by_image(batch_of_box.data(), K, N, order, start);
    scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
    const int64_t blocks = channel_blocks(C);
    const int64_t work = K / std::max<int64_t>(N, 1) * cells * 4 * kChannelBlock;
    at::parallel_for(0, N * blocks, grain_for(work), [&](int64_t begin, int64_t end) {
      // half/bfloat16 accumulate a block's planes in float (as the reference does in double) and round once.
      constexpr bool direct = std::is_same_v<scalar_t, T>;
      std::vector<T> scratch(direct ? 0 : plane_size * kChannelBlock);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t n = item / blocks;
        bool full;
        const int64_t c0 = block_start(item % blocks, C, full);
        const int64_t cb = full ? kChannelBlock : 1;
        scalar_t* out0 = gi + (n * C + c0) * plane_size;
        T* acc0 = direct ? reinterpret_cast<T*>(out0) : scratch.data();
        if (!direct) std::fill(scratch.begin(), scratch.begin() + cb * plane_size, T(0));
        for (int64_t j = start[n]; j < start[n + 1]; ++j) {
          const int64_t k = order[j];
          const scalar_t* g0 = g + (k * C + c0) * cells;
          if (full) {
            roi_input_grad_box<kChannelBlock>(tab, tab.boxes[k], g0, cells, PH, PW, W, acc0, plane_size);
          } else {
            roi_input_grad_box<1>(tab, tab.boxes[k], g0, cells, PH, PW, W, acc0, plane_size);
          }
        }
        if (!direct) std::copy(scratch.begin(), scratch.begin() + cb * plane_size, out0);
      }
    });
  });
  return grad_input;
}

at::Tensor roi_align_backward_boxes_cpu(const at::Tensor& grad_, const at::Tensor& input_, const at::Tensor& rois_,
                                       double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                       int64_t sampling_ratio, bool aligned) {
  check_roi_align(input_, "input", rois_, pooled_height, pooled_width, c10::DeviceType::CPU);
  check_same(grad_, input_, "grad", "input");
  check_grad(grad_, rois_.size(0), input_.size(1), pooled_height, pooled_width);
  const at::Tensor input = input_.contiguous();  // one copy if strided, as in the forward
  const at::Tensor rois = rois_.contiguous();
  const at::Tensor grad = grad_.contiguous();
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t K = rois.size(0), PH = pooled_height, PW = pooled_width;
  at::Tensor grad_rois = at::zeros({K, 5}, rois.options());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_backward_boxes_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const RoiTables<scalar_t, T> tab(rois.const_data_ptr<scalar_t>(), K, N, H, W, spatial_scale, PH, PW,
                                     sampling_ratio, aligned);
    if (K == 0 || C == 0 || H * W == 0) return;
    const scalar_t* img = input.const_data_ptr<scalar_t>();
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const int64_t plane_size = H * W;
    const int64_t cells = PH * PW;
    scalar_t* gr = grad_rois.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, K, grain_for(C * cells * 4), [&](int64_t begin, int64_t end) {
      std::vector<std::array<T, 4>> sums(end - begin, {T(0), T(0), T(0), T(0)});  // d x1, d y1, d x2, d y2
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t k = begin; k < end; ++k) {
          const RoiBox& box = tab.boxes[k];
          const T count = static_cast<T>(box.geo.count);
          T d_x1 = sums[k - begin][0], d_y1 = sums[k - begin][1];
          T d_x2 = sums[k - begin][2], d_y2 = sums[k - begin][3];
          const scalar_t* plane = img + (box.n * C + c) * plane_size;
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

}  // namespace

TORCH_LIBRARY_IMPL(impls, CPU, m) {
  m.impl("roi_align_forward", TORCH_FN(roi_align_forward_cpu));
  m.impl("roi_align_backward_input", TORCH_FN(roi_align_backward_input_cpu));
  m.impl("roi_align_backward_boxes", TORCH_FN(roi_align_backward_boxes_cpu));
}

}  // namespace impls
