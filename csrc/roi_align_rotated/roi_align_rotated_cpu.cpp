// roi_align_rotated on the CPU: detectron2's ROIAlignRotated with box gradients (CONVENTIONS.md §3b), mirroring
// impls/ops/roi_align_rotated/reference.py; the per-sample math is rotated_geometry.h, shared with CUDA.
//
// A rotated sample's row and column both depend on the sample's (iy, ix), so there are no row and column tables
// as in roi_align: each box gets one table of all its samples (PH * PW * grid_h * grid_w taps, e.g. 7 * 7 * 2 * 2
// = 196), built in double and rounded to T, and every channel reuses it. A table lives only while its box is
// processed (one per task, reused by the task's consecutive items of the same box): the adaptive grid of a large
// box is big (a 200-pixel box on a 7x7 output: 29 x 29 samples per bin, 41K taps, about 2 MB), too big to keep
// for every box at once.
//
// One code path serves NCHW and channels_last: element (n, c, pixel) sits at n * stride_n + c * stride_c +
// pixel * stride_p, and the channel loop is innermost (contiguous for channels_last, one plane apart for NCHW).
// Each output element still sums its samples in the reference's order, so both layouts give the same bits.
// Forward: split over (box, channel slice of 64); a task's consecutive items of one box share its table. NCHW
// slices read the box's tap window copied interleaved (pixel-major) into a per-task buffer.
// Image gradient: split over (image, channel slice); each task walks its image's boxes in increasing k and adds
// every tap in the reference's order: deterministic for any thread count, no two threads write one element. NCHW
// slices accumulate interleaved in a per-task buffer, transposed into their planes once.
// Box gradient: split over boxes; each box sums channel, cell, sample in the reference's order.
// half/bfloat16 compute in float and round once (the image gradient accumulates in a float buffer).
// Float64 equals the reference bit for bit: same expressions, same order, no FP contraction (setup.py).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cmath>
#include <type_traits>
#include <vector>

#include "common/bilinear.h"
#include "common/checks.h"
#include "common/cpu_common.h"
#include "roi_align_rotated/rotated_geometry.h"

namespace impls {
namespace {

// Channels per task: enough to amortize a box's table over many channels, few enough that a call with few boxes
// (K = 1, C = 256: 4 tasks) still spreads over the threads.
constexpr int64_t kChannelSlice = 64;

struct Problem {
  int64_t N, C, H, W, PH, PW, sampling_ratio;
  double spatial_scale;
  bool clockwise;
  int64_t cells() const { return PH * PW; }
};

// Element strides of a [N, C, H, W] tensor laid out `layout`: (n, c, pixel) at n * n_ + c * c_ + pixel * p_.
// e.g. C = 3, H * W = 16: NCHW (48, 16, 1), channels_last (48, 1, 3).
struct Strides {
  int64_t n_, c_, p_;
  Strides(at::MemoryFormat layout, int64_t C, int64_t plane)
      : n_(C * plane),
        c_(layout == at::MemoryFormat::ChannelsLast ? 1 : plane),
        p_(layout == at::MemoryFormat::ChannelsLast ? C : 1) {}
};

// Every box's image and geometry, after checking its batch column (-1 < b < N, truncated as in the reference)
// and, with the adaptive grid, that its size is finite (the grid is ceil(size / output size)). Runs before any
// kernel reads the map, on the calling thread, so a bad box raises before anything is read.
template <typename scalar_t>
struct Boxes {
  std::vector<int64_t> n;
  std::vector<RotatedGeometry<double>> geo;

  Boxes(const scalar_t* rois, int64_t K, const Problem& p) : n(K), geo(K) {
    for (int64_t k = 0; k < K; ++k) {
      const scalar_t* r = rois + k * 6;
      const double b = static_cast<double>(r[0]);
      TORCH_CHECK(roi_batch_valid(b, p.N), "rois[", k, ", 0] = ", b, " is not a batch index in [0, ", p.N, ")");
      if (p.sampling_ratio <= 0) {
        TORCH_CHECK(std::isfinite(static_cast<double>(r[3])) && std::isfinite(static_cast<double>(r[4])), "rois[",
                    k, "] must have a finite w and h with adaptive sampling (sampling_ratio <= 0)");
      }
      n[k] = static_cast<int64_t>(b);
      geo[k] = rotated_geometry<double>(static_cast<double>(r[1]), static_cast<double>(r[2]),
                                        static_cast<double>(r[3]), static_cast<double>(r[4]),
                                        static_cast<double>(r[5]), p.spatial_scale, p.PH, p.PW, p.sampling_ratio,
                                        p.clockwise);
    }
  }
};

// One box's samples: taps[cell * per_cell + iy * grid_w + ix] for cell = ph * PW + pw, and with `with_slopes` the
// position derivatives for the box gradient alongside.
template <typename T>
struct BoxTable {
  int64_t box = -1;  // the box the table holds, -1: none yet
  int64_t grid_h = 0, grid_w = 0, per_cell = 0;
  std::vector<RotatedTap<T>> taps;
  std::vector<RotatedSlopes<T>> slopes;

  void build(int64_t k, const RotatedGeometry<double>& g, const Problem& p, bool with_slopes) {
    if (box == k) return;
    box = k;
    // A negative grid (adaptive, a negative size that slipped past validation) has no samples.
    grid_h = std::max<int64_t>(g.grid_h, 0);
    grid_w = std::max<int64_t>(g.grid_w, 0);
    per_cell = grid_h * grid_w;
    taps.resize(p.cells() * per_cell);
    if (with_slopes) slopes.resize(taps.size());
    for (int64_t ph = 0; ph < p.PH; ++ph) {
      for (int64_t pw = 0; pw < p.PW; ++pw) {
        for (int64_t iy = 0; iy < grid_h; ++iy) {
          for (int64_t ix = 0; ix < grid_w; ++ix) {
            const int64_t i = ((ph * p.PW + pw) * grid_h + iy) * grid_w + ix;
            const RotatedPoint<double> pt = rotated_point(g, ph, pw, iy, ix);
            taps[i] = rotated_tap<T>(pt, p.H, p.W);
            if (with_slopes && taps[i].valid) {
              slopes[i] = rotated_slopes<T>(g, pt, ph, pw, iy, ix, p.PH, p.PW, p.spatial_scale);
            }
          }
        }
      }
    }
  }
};

// The pixels [y0, y1) x [x0, x1) that a box's valid taps read (empty when none is valid).
template <typename T>
std::array<int64_t, 4> tap_window(const BoxTable<T>& table) {
  int64_t y0 = INT64_MAX, y1 = -1, x0 = INT64_MAX, x1 = -1;
  for (const RotatedTap<T>& t : table.taps) {
    if (!t.valid) continue;
    y0 = std::min(y0, t.y_low);
    y1 = std::max(y1, t.y_high);
    x0 = std::min(x0, t.x_low);
    x1 = std::max(x1, t.x_high);
  }
  return y1 < 0 ? std::array<int64_t, 4>{0, 0, 0, 0} : std::array<int64_t, 4>{y0, y1 + 1, x0, x1 + 1};
}

// Forward: split over (box, channel slice). NCHW: the slice's planes are first copied, over the box's tap window
// only, interleaved into a per-task buffer (each window row of a plane a contiguous read), so that each tap reads
// one contiguous run of channels instead of one value per plane; the sums are the same, in the same order.
template <typename scalar_t, typename T>
void forward_kernel(const Boxes<scalar_t>& boxes, const Problem& p, const scalar_t* in, const Strides& s,
                    scalar_t* out, const Strides& os) {
  const int64_t K = static_cast<int64_t>(boxes.n.size());
  const int64_t slices = (p.C + kChannelSlice - 1) / kChannelSlice;
  const bool interleave = s.c_ != 1;
  at::parallel_for(0, K * slices, 1, [&](int64_t begin, int64_t end) {
    BoxTable<T> table;
    std::vector<T> acc(kChannelSlice);
    std::vector<scalar_t> window;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t k = item / slices, c0 = item % slices * kChannelSlice;
      const int64_t cs = std::min(kChannelSlice, p.C - c0);
      table.build(k, boxes.geo[k], p, false);
      const T count = static_cast<T>(boxes.geo[k].count);
      const scalar_t* planes = in + boxes.n[k] * s.n_ + c0 * s.c_;
      // Pixel (y, x) of channel c at image[((y - y0) * row + x - x0) * p_step + c * c_step].
      int64_t y0 = 0, x0 = 0, row = p.W, p_step = s.p_, c_step = s.c_;
      const scalar_t* image = planes;
      if (interleave) {
        const auto [wy0, wy1, wx0, wx1] = tap_window(table);
        y0 = wy0;
        x0 = wx0;
        row = wx1 - wx0;
        p_step = cs;
        c_step = 1;
        window.resize((wy1 - wy0) * row * cs);
        for (int64_t y = wy0; y < wy1; ++y) {
          transpose_matrix(planes + y * p.W + wx0, cs, row, window.data() + (y - wy0) * row * cs, s.c_);
        }
        image = window.data();
      }
      scalar_t* dst = out + k * os.n_ + c0 * os.c_;
      for (int64_t cell = 0; cell < p.cells(); ++cell) {
        std::fill(acc.begin(), acc.begin() + cs, T(0));
        const RotatedTap<T>* taps = table.taps.data() + cell * table.per_cell;
        for (int64_t i = 0; i < table.per_cell; ++i) {
          const RotatedTap<T>& t = taps[i];
          if (!t.valid) continue;
          const T w1 = t.hy * t.hx, w2 = t.hy * t.lx, w3 = t.ly * t.hx, w4 = t.ly * t.lx;
          const int64_t yl = t.y_low - y0, yh = t.y_high - y0, xl = t.x_low - x0, xh = t.x_high - x0;
          const int64_t o1 = (yl * row + xl) * p_step, o2 = (yl * row + xh) * p_step;
          const int64_t o3 = (yh * row + xl) * p_step, o4 = (yh * row + xh) * p_step;
          for (int64_t c = 0; c < cs; ++c) {
            const scalar_t* v = image + c * c_step;
            acc[c] += w1 * static_cast<T>(v[o1]) + w2 * static_cast<T>(v[o2]) + w3 * static_cast<T>(v[o3]) +
                      w4 * static_cast<T>(v[o4]);
          }
        }
        for (int64_t c = 0; c < cs; ++c) dst[c * os.c_ + cell * os.p_] = static_cast<scalar_t>(acc[c] / count);
      }
    }
  });
}

// Channels per task of the NCHW image gradient, whose slice accumulates pixel-major in a per-task buffer
// (256 x 256 x 16 x 4 B = 4 MB): each tap's adds are one contiguous run instead of one per plane.
constexpr int64_t kInterleavedSlice = 16;

// acc: the image gradient in T, zeroed, strides s. g: the incoming gradient, strides gs ([K, C, PH, PW]).
// Each (image, channel slice) task builds the tables of its image's boxes itself: a box's geometry is computed once
// per slice (C = 256: 4 times; NCHW: 16), the price of no shared state between tasks and of an order fixed per
// element. NCHW: the slice accumulates interleaved (channels contiguous per pixel) in a buffer, transposed into its
// planes at the end: the same adds in the same order, so the same bits as channels_last; adding into 64 planes a
// tap instead made the NCHW fwd+bwd 5.3x slower (P2 256 x 256, C = 256, 512 boxes, 7x7: 724 -> 136 ms).
template <typename scalar_t, typename T>
void input_grad_kernel(const Boxes<scalar_t>& boxes, const Problem& p, const scalar_t* g, const Strides& gs, T* acc,
                       const Strides& s) {
  const int64_t K = static_cast<int64_t>(boxes.n.size());
  std::vector<int64_t> order, start;
  boxes_by_image(boxes.n.data(), K, p.N, order, start);
  const bool interleave = s.c_ != 1;
  // Slices of at most kChannelSlice channels (kInterleavedSlice for NCHW), narrower when there would be fewer tasks
  // than threads. The slicing depends on the thread count; the order in which any one element receives its taps
  // does not.
  const int64_t tasks_per_image = (at::get_num_threads() + p.N - 1) / std::max<int64_t>(p.N, 1);
  const int64_t slice = std::clamp<int64_t>((p.C + tasks_per_image - 1) / tasks_per_image, 1,
                                            interleave ? kInterleavedSlice : kChannelSlice);
  const int64_t slices = (p.C + slice - 1) / slice;
  at::parallel_for(0, p.N * slices, 1, [&](int64_t begin, int64_t end) {
    BoxTable<T> table;
    std::vector<T> buffer;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / slices, c0 = item % slices * slice;
      const int64_t cs = std::min(slice, p.C - c0);
      T* planes = acc + n * s.n_ + c0 * s.c_;
      if (interleave) buffer.assign(p.H * p.W * cs, T(0));
      T* image = interleave ? buffer.data() : planes;
      const int64_t c_step = interleave ? 1 : s.c_, p_step = interleave ? cs : s.p_;
      for (int64_t j = start[n]; j < start[n + 1]; ++j) {
        const int64_t k = order[j];
        table.build(k, boxes.geo[k], p, false);
        const T count = static_cast<T>(boxes.geo[k].count);
        const scalar_t* gk = g + k * gs.n_ + c0 * gs.c_;
        for (int64_t cell = 0; cell < p.cells(); ++cell) {
          const RotatedTap<T>* taps = table.taps.data() + cell * table.per_cell;
          const scalar_t* gc = gk + cell * gs.p_;
          for (int64_t i = 0; i < table.per_cell; ++i) {
            const RotatedTap<T>& t = taps[i];
            if (!t.valid) continue;
            const T w1 = t.hy * t.hx, w2 = t.hy * t.lx, w3 = t.ly * t.hx, w4 = t.ly * t.lx;
            T* a1 = image + (t.y_low * p.W + t.x_low) * p_step;
            T* a2 = image + (t.y_low * p.W + t.x_high) * p_step;
            T* a3 = image + (t.y_high * p.W + t.x_low) * p_step;
            T* a4 = image + (t.y_high * p.W + t.x_high) * p_step;
            // One loop per corner: where clamping puts two corners on one pixel they add in the reference's order.
            // Each tap adds (g * w) / count, the reference's expression.
            for (int64_t c = 0; c < cs; ++c) a1[c * c_step] += static_cast<T>(gc[c * gs.c_]) * w1 / count;
            for (int64_t c = 0; c < cs; ++c) a2[c * c_step] += static_cast<T>(gc[c * gs.c_]) * w2 / count;
            for (int64_t c = 0; c < cs; ++c) a3[c * c_step] += static_cast<T>(gc[c * gs.c_]) * w3 / count;
            for (int64_t c = 0; c < cs; ++c) a4[c * c_step] += static_cast<T>(gc[c * gs.c_]) * w4 / count;
          }
        }
      }
      if (interleave) deinterleave_planes(buffer.data(), cs, p.H * p.W, planes);
    }
  });
}

// grad_rois [K, 6]: column 0 stays 0; columns 1..5 d out / d (cx, cy, w, h, angle).
template <typename scalar_t, typename T>
void boxes_grad_kernel(const Boxes<scalar_t>& boxes, const Problem& p, const scalar_t* g, const Strides& gs,
                       const scalar_t* in, const Strides& s, scalar_t* grad_rois) {
  const int64_t K = static_cast<int64_t>(boxes.n.size());
  const T scale = static_cast<T>(p.spatial_scale);  // d y / d cy and d x / d cx
  at::parallel_for(0, K, 1, [&](int64_t begin, int64_t end) {
    BoxTable<T> table;
    for (int64_t k = begin; k < end; ++k) {
      table.build(k, boxes.geo[k], p, true);
      const T count = static_cast<T>(boxes.geo[k].count);
      T d_cx = 0, d_cy = 0, d_w = 0, d_h = 0, d_a = 0;
      for (int64_t c = 0; c < p.C; ++c) {
        const scalar_t* v = in + boxes.n[k] * s.n_ + c * s.c_;
        const scalar_t* gk = g + k * gs.n_ + c * gs.c_;
        for (int64_t cell = 0; cell < p.cells(); ++cell) {
          const T gv = static_cast<T>(gk[cell * gs.p_]);
          const int64_t first = cell * table.per_cell;
          for (int64_t i = first; i < first + table.per_cell; ++i) {
            const RotatedTap<T>& t = table.taps[i];
            if (!t.valid) continue;
            const RotatedSlopes<T>& sl = table.slopes[i];
            const T v1 = static_cast<T>(v[(t.y_low * p.W + t.x_low) * s.p_]);
            const T v2 = static_cast<T>(v[(t.y_low * p.W + t.x_high) * s.p_]);
            const T v3 = static_cast<T>(v[(t.y_high * p.W + t.x_low) * s.p_]);
            const T v4 = static_cast<T>(v[(t.y_high * p.W + t.x_high) * s.p_]);
            if (t.y_moves) {
              const T gy = gv * (t.hx * (v3 - v1) + t.lx * (v4 - v2)) / count;
              d_cy += gy * scale;
              d_w += gy * sl.dy_dw;
              d_h += gy * sl.dy_dh;
              d_a += gy * sl.dy_da;
            }
            if (t.x_moves) {
              const T gx = gv * (t.hy * (v2 - v1) + t.ly * (v4 - v3)) / count;
              d_cx += gx * scale;
              d_w += gx * sl.dx_dw;
              d_h += gx * sl.dx_dh;
              d_a += gx * sl.dx_da;
            }
          }
        }
      }
      scalar_t* r = grad_rois + k * 6;
      r[1] = static_cast<scalar_t>(d_cx);
      r[2] = static_cast<scalar_t>(d_cy);
      r[3] = static_cast<scalar_t>(d_w);
      r[4] = static_cast<scalar_t>(d_h);
      r[5] = static_cast<scalar_t>(d_a);
    }
  });
}

// ------------------------------------------------------------------------------------------------ the operators

at::Tensor roi_align_rotated_forward_cpu(const at::Tensor& input_, const at::Tensor& rois_, double spatial_scale,
                                         int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                         bool clockwise) {
  check_roi_align(input_, "input", rois_, pooled_height, pooled_width, c10::DeviceType::CPU, kRoiColumns);
  // The input's layout (a strided input is copied once to it); the output takes the same.
  const at::MemoryFormat layout = input_.suggest_memory_format();
  const at::Tensor input = input_.contiguous(layout);
  const at::Tensor rois = rois_.contiguous();
  const Problem p{input.size(0), input.size(1),  input.size(2), input.size(3), pooled_height,
                  pooled_width,  sampling_ratio, spatial_scale, clockwise};
  const int64_t K = rois.size(0);
  at::Tensor out = at::empty({K, p.C, p.PH, p.PW}, input.options().memory_format(layout));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_rotated_forward_cpu",
                                  [&] {
    using T = at::opmath_type<scalar_t>;
    const Boxes<scalar_t> boxes(rois.const_data_ptr<scalar_t>(), K, p);
    if (out.numel() == 0) return;
    forward_kernel<scalar_t, T>(boxes, p, input.const_data_ptr<scalar_t>(), Strides(layout, p.C, p.H * p.W),
                                out.mutable_data_ptr<scalar_t>(), Strides(layout, p.C, p.cells()));
  });
  return out;
}

at::Tensor roi_align_rotated_backward_input_cpu(const at::Tensor& grad_, const at::Tensor& rois_,
                                                double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                                int64_t batch_size, int64_t channels, int64_t height, int64_t width,
                                                int64_t sampling_ratio, bool clockwise) {
  check_roi_align(grad_, "grad", rois_, pooled_height, pooled_width, c10::DeviceType::CPU, kRoiColumns);
  check_grad(grad_, rois_.size(0), channels, pooled_height, pooled_width);
  check_input_sizes(batch_size, channels, height, width);
  // The incoming gradient's layout: channels_last in a channels_last network.
  const at::MemoryFormat layout = grad_.suggest_memory_format();
  const at::Tensor grad = grad_.contiguous(layout);
  const at::Tensor rois = rois_.contiguous();
  const Problem p{batch_size, channels,       height,        width,    pooled_height,
                  pooled_width, sampling_ratio, spatial_scale, clockwise};
  const int64_t K = rois.size(0);
  at::Tensor result;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                  "roi_align_rotated_backward_input_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const Boxes<scalar_t> boxes(rois.const_data_ptr<scalar_t>(), K, p);
    // float/double accumulate straight into the result; half types into a float buffer rounded once. With any tap
    // to add, an NCHW task writes every plane of its slice whole (input_grad_kernel's interleaved buffer): the
    // result needs no zeroing first; channels_last adds in place, into zeros made in that layout.
    const bool taps = K > 0 && p.C > 0 && p.H > 0 && p.W > 0;
    at::Tensor acc = at::empty({p.N, p.C, p.H, p.W},
                               grad.options().dtype(c10::CppTypeToScalarType<T>::value).memory_format(layout));
    if (!taps || layout == at::MemoryFormat::ChannelsLast) acc.zero_();
    if (taps) {
      input_grad_kernel<scalar_t, T>(boxes, p, grad.const_data_ptr<scalar_t>(), Strides(layout, p.C, p.cells()),
                                     acc.mutable_data_ptr<T>(), Strides(layout, p.C, p.H * p.W));
    }
    result = std::is_same_v<scalar_t, T> ? acc : acc.to(grad.scalar_type());
  });
  return result.contiguous(layout);
}

at::Tensor roi_align_rotated_backward_boxes_cpu(const at::Tensor& grad_, const at::Tensor& input_,
                                                const at::Tensor& rois_, double spatial_scale, int64_t pooled_height,
                                                int64_t pooled_width, int64_t sampling_ratio, bool clockwise) {
  check_roi_align(input_, "input", rois_, pooled_height, pooled_width, c10::DeviceType::CPU, kRoiColumns);
  check_same(grad_, input_, "grad", "input");
  check_grad(grad_, rois_.size(0), input_.size(1), pooled_height, pooled_width);
  // Both read in the input's layout.
  const at::MemoryFormat layout = input_.suggest_memory_format();
  const at::Tensor input = input_.contiguous(layout);
  const at::Tensor grad = grad_.contiguous(layout);
  const at::Tensor rois = rois_.contiguous();
  const Problem p{input.size(0), input.size(1),  input.size(2), input.size(3), pooled_height,
                  pooled_width,  sampling_ratio, spatial_scale, clockwise};
  const int64_t K = rois.size(0);
  at::Tensor grad_rois = at::zeros({K, 6}, rois.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "roi_align_rotated_backward_boxes_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const Boxes<scalar_t> boxes(rois.const_data_ptr<scalar_t>(), K, p);
    if (K == 0 || p.C == 0) return;
    boxes_grad_kernel<scalar_t, T>(boxes, p, grad.const_data_ptr<scalar_t>(), Strides(layout, p.C, p.cells()),
                                   input.const_data_ptr<scalar_t>(), Strides(layout, p.C, p.H * p.W),
                                   grad_rois.mutable_data_ptr<scalar_t>());
  });
  return grad_rois;
}

}  // namespace

TORCH_LIBRARY_IMPL(impls, CPU, m) {
  m.impl("roi_align_rotated_forward", TORCH_FN(roi_align_rotated_forward_cpu));
  m.impl("roi_align_rotated_backward_input", TORCH_FN(roi_align_rotated_backward_input_cpu));
  m.impl("roi_align_rotated_backward_boxes", TORCH_FN(roi_align_rotated_backward_boxes_cpu));
}

}  // namespace impls
