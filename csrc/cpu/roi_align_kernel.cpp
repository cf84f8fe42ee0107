// roi_align on the CPU: torchvision's sampling rule (csrc/bilinear.h), mirroring impls/reference.py.
//
// The sample rows (PH * grid_h per box) and columns (PW * grid_w per box) are computed once per box into
// tables: in-range flag, corner pixels, weights, and the position derivative used by the box gradient. Every
// channel then reuses them; the per-sample work left is 4 weight products, 4 loads and 4 multiply-adds.
// Forward: split over (box, channel). Image gradient: split over (image, channel) planes, each walking its
// image's boxes in increasing k, so contributions arrive in the reference's order (deterministic, no races).
// Box gradient: split over boxes, summing channel, cell, sample in the reference's order.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
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

template <typename T>
struct RoiBox {
  int64_t n;
  RoiGeometry<T> geo;
  int64_t grid_h;  // max(geo.grid_h, 0): rows of samples per bin actually visited
  int64_t grid_w;
  int64_t y_offset;  // first row of this box in the y table
  int64_t x_offset;
};

template <typename T>
RoiAxis<T> roi_axis(T start, int64_t p, T bin, int64_t i, int64_t grid, int64_t pooled, bool clamped, int64_t size,
                    T spatial_scale) {
  RoiAxis<T> a{};
  const T v = roi_sample(start, p, bin, i, grid);
  a.valid = roi_in_range(v, size) && size > 0;
  if (!a.valid) return a;
  const RoiCorner<T> corner = roi_corner(v, size);
  a.moves = corner.moves;
  a.low = corner.low;
  a.high = corner.high;
  a.l = corner.frac;
  a.h = static_cast<T>(1) - corner.frac;
  const T pos = roi_position<T>(p, i, grid, pooled, clamped);
  a.scale_lo = spatial_scale * (static_cast<T>(1) - pos);
  a.scale_hi = spatial_scale * pos;
  return a;
}

// Per-box geometry and the sample tables of all boxes. Checks every box's batch column before any read.
template <typename scalar_t, typename T>
struct RoiTables {
  std::vector<RoiBox<T>> boxes;
  std::vector<RoiAxis<T>> ys;
  std::vector<RoiAxis<T>> xs;

  RoiTables(const scalar_t* rois, int64_t K, int64_t N, int64_t H, int64_t W, double spatial_scale_, int64_t PH,
            int64_t PW, int64_t sampling_ratio, bool aligned) {
    const T spatial_scale = static_cast<T>(spatial_scale_);
    boxes.resize(K);
    int64_t y_rows = 0, x_rows = 0;
    for (int64_t k = 0; k < K; ++k) {
      const scalar_t* r = rois + k * 5;
      const T b = static_cast<T>(r[0]);
      TORCH_CHECK(roi_batch_valid(b, N), "rois[", k, ", 0] = ", static_cast<double>(b),
                  " is not a batch index in [0, ", N, ")");
      if (sampling_ratio <= 0) {
        // The adaptive grid is ceil(box size / output size) samples: it needs a finite box.
        for (int j = 1; j < 5; ++j) {
          TORCH_CHECK(std::isfinite(static_cast<double>(r[j])), "rois[", k, "] must be finite with adaptive ",
                      "sampling (sampling_ratio <= 0)");
        }
      }
      RoiBox<T>& box = boxes[k];
      box.n = static_cast<int64_t>(b);
      box.geo = roi_geometry<T>(static_cast<T>(r[1]), static_cast<T>(r[2]), static_cast<T>(r[3]),
                                static_cast<T>(r[4]), spatial_scale, PH, PW, sampling_ratio, aligned);
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
        const RoiBox<T>& box = boxes[k];
        const RoiGeometry<T>& g = box.geo;
        for (int64_t ph = 0; ph < PH; ++ph)
          for (int64_t iy = 0; iy < box.grid_h; ++iy)
            ys[box.y_offset + ph * box.grid_h + iy] =
                roi_axis(g.y_start, ph, g.bin_h, iy, g.grid_h, PH, g.h_clamped, H, spatial_scale);
        for (int64_t pw = 0; pw < PW; ++pw)
          for (int64_t ix = 0; ix < box.grid_w; ++ix)
            xs[box.x_offset + pw * box.grid_w + ix] =
                roi_axis(g.x_start, pw, g.bin_w, ix, g.grid_w, PW, g.w_clamped, W, spatial_scale);
      }
    });
  }
};

at::Tensor roi_align_forward_cpu(const at::Tensor& input_, const at::Tensor& rois_, double spatial_scale,
                                 int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  check_roi_align(input_, rois_, pooled_height, pooled_width, c10::DeviceType::CPU);
  // A channels_last or strided input is copied once here (one pass over N*C*H*W) so that the sampling loops
  // read planes with unit stride; for the usual contiguous input this is free.
  const at::Tensor input = input_.contiguous();
  const at::Tensor rois = rois_.contiguous();
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t K = rois.size(0), PH = pooled_height, PW = pooled_width;
  at::Tensor out = at::empty({K, C, PH, PW}, input.options());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_forward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const RoiTables<scalar_t, T> tab(rois.const_data_ptr<scalar_t>(), K, N, H, W, spatial_scale, PH, PW,
                                     sampling_ratio, aligned);
    if (out.numel() == 0) return;
    const scalar_t* img = input.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, K * C, grain_for(PH * PW * 4), [&](int64_t begin, int64_t end) {
      for (int64_t kc = begin; kc < end; ++kc) {
        const int64_t k = kc / C, c = kc % C;
        const RoiBox<T>& box = tab.boxes[k];
        const scalar_t* plane = img + (box.n * C + c) * H * W;
        const T count = static_cast<T>(box.geo.count);
        scalar_t* dst = o + kc * PH * PW;
        for (int64_t ph = 0; ph < PH; ++ph) {
          const RoiAxis<T>* yrow = tab.ys.data() + box.y_offset + ph * box.grid_h;
          for (int64_t pw = 0; pw < PW; ++pw) {
            const RoiAxis<T>* xrow = tab.xs.data() + box.x_offset + pw * box.grid_w;
            T acc = 0;
            for (int64_t iy = 0; iy < box.grid_h; ++iy) {
              const RoiAxis<T>& y = yrow[iy];
              if (!y.valid) continue;
              const scalar_t* row_low = plane + y.low * W;
              const scalar_t* row_high = plane + y.high * W;
              for (int64_t ix = 0; ix < box.grid_w; ++ix) {
                const RoiAxis<T>& x = xrow[ix];
                if (!x.valid) continue;
                const T w1 = y.h * x.h, w2 = y.h * x.l, w3 = y.l * x.h, w4 = y.l * x.l;
                acc += w1 * static_cast<T>(row_low[x.low]) + w2 * static_cast<T>(row_low[x.high]) +
                       w3 * static_cast<T>(row_high[x.low]) + w4 * static_cast<T>(row_high[x.high]);
              }
            }
            dst[ph * PW + pw] = static_cast<scalar_t>(acc / count);
          }
        }
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> roi_align_backward_cpu(const at::Tensor& grad_, const at::Tensor& input_,
                                                          const at::Tensor& rois_, double spatial_scale,
                                                          int64_t pooled_height, int64_t pooled_width,
                                                          int64_t sampling_ratio, bool aligned, bool input_grad,
                                                          bool rois_grad) {
  check_roi_align(input_, rois_, pooled_height, pooled_width, c10::DeviceType::CPU);
  check_grad(grad_, input_, rois_.size(0), pooled_height, pooled_width);
  const at::Tensor input = input_.contiguous();  // one copy if strided, as in the forward
  const at::Tensor rois = rois_.contiguous();
  const at::Tensor grad = grad_.contiguous();
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t K = rois.size(0), PH = pooled_height, PW = pooled_width;
  // A gradient not asked for is an empty [0] tensor; the Python glue turns it into None.
  at::Tensor grad_input = input_grad ? at::zeros({N, C, H, W}, input.options()) : at::empty({0}, input.options());
  at::Tensor grad_rois = rois_grad ? at::zeros({K, 5}, rois.options()) : at::empty({0}, rois.options());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_backward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const RoiTables<scalar_t, T> tab(rois.const_data_ptr<scalar_t>(), K, N, H, W, spatial_scale, PH, PW,
                                     sampling_ratio, aligned);
    if (K == 0 || C == 0 || H * W == 0) return;
    const scalar_t* img = input.const_data_ptr<scalar_t>();
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const int64_t plane_size = H * W;
    const int64_t cells = PH * PW;

    if (input_grad) {
      std::vector<int64_t> batch_of_box(K), order, start;
      for (int64_t k = 0; k < K; ++k) batch_of_box[k] = tab.boxes[k].n;
      boxes_by_image(batch_of_box.data(), K, N, order, start);
      scalar_t* gi = grad_input.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, N * C, grain_for(K / std::max<int64_t>(N, 1) * cells * 4), [&](int64_t begin, int64_t end) {
        // half/bfloat16 accumulate each plane in float (as the reference does in double) and round once.
        constexpr bool direct = std::is_same_v<scalar_t, T>;
        std::vector<T> scratch(direct ? 0 : plane_size);
        for (int64_t nc = begin; nc < end; ++nc) {
          const int64_t n = nc / C, c = nc % C;
          scalar_t* out_plane = gi + nc * plane_size;
          T* acc = direct ? reinterpret_cast<T*>(out_plane) : scratch.data();
          if (!direct) std::fill(scratch.begin(), scratch.end(), T(0));
          for (int64_t j = start[n]; j < start[n + 1]; ++j) {
            const int64_t k = order[j];
            const RoiBox<T>& box = tab.boxes[k];
            const T count = static_cast<T>(box.geo.count);
            const scalar_t* gk = g + (k * C + c) * cells;
            for (int64_t ph = 0; ph < PH; ++ph) {
              const RoiAxis<T>* yrow = tab.ys.data() + box.y_offset + ph * box.grid_h;
              for (int64_t pw = 0; pw < PW; ++pw) {
                const RoiAxis<T>* xrow = tab.xs.data() + box.x_offset + pw * box.grid_w;
                const T gv = static_cast<T>(gk[ph * PW + pw]);
                for (int64_t iy = 0; iy < box.grid_h; ++iy) {
                  const RoiAxis<T>& y = yrow[iy];
                  if (!y.valid) continue;
                  T* row_low = acc + y.low * W;
                  T* row_high = acc + y.high * W;
                  for (int64_t ix = 0; ix < box.grid_w; ++ix) {
                    const RoiAxis<T>& x = xrow[ix];
                    if (!x.valid) continue;
                    row_low[x.low] += gv * (y.h * x.h) / count;
                    row_low[x.high] += gv * (y.h * x.l) / count;
                    row_high[x.low] += gv * (y.l * x.h) / count;
                    row_high[x.high] += gv * (y.l * x.l) / count;
                  }
                }
              }
            }
          }
          if (!direct) std::copy(scratch.begin(), scratch.end(), out_plane);
        }
      });
    }

    if (rois_grad) {
      scalar_t* gr = grad_rois.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, K, grain_for(C * cells * 4), [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          const RoiBox<T>& box = tab.boxes[k];
          const T count = static_cast<T>(box.geo.count);
          T d_x1 = 0, d_y1 = 0, d_x2 = 0, d_y2 = 0;
          for (int64_t c = 0; c < C; ++c) {
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
          }
          // Column 0 (the batch index) gets no gradient.
          gr[k * 5 + 1] = static_cast<scalar_t>(d_x1);
          gr[k * 5 + 2] = static_cast<scalar_t>(d_y1);
          gr[k * 5 + 3] = static_cast<scalar_t>(d_x2);
          gr[k * 5 + 4] = static_cast<scalar_t>(d_y2);
        }
      });
    }
  });
  return {grad_input, grad_rois};
}

}  // namespace

TORCH_LIBRARY_IMPL(impls, CPU, m) {
  m.impl("roi_align_forward", TORCH_FN(roi_align_forward_cpu));
  m.impl("roi_align_backward", TORCH_FN(roi_align_backward_cpu));
}

}  // namespace impls
