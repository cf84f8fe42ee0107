// crop_and_resize on the CPU: TensorFlow's sampling rule (csrc/bilinear.h), mirroring impls/reference.py.
//
// The per-row and per-column sample data (pixel pair, lerp, in-range flag) depend only on the box, so they are
// computed once per box into tables and reused for every channel, kChannelBlock (8) channels at a time
// (cpu_common.h): a sample's table entry and branches are paid once per 8 channels.
// Forward: split over (channel block, box) items in channel-block-major order, so a thread's consecutive items
// reuse the same 8 planes (in L2) for all boxes.
// Image gradient: split over (image, channel block); each walks the boxes of its image in increasing k, so
// every element receives its contributions in the reference's order (box, cell, corner): deterministic,
// independent of the thread count, and no two threads write the same element.
// Box gradient: split over box ranges, walked channel-outer, box-inner (locality); each box still sums channel,
// cell in the reference's order.
// Float64 equals impls/reference.py bit for bit: same expressions, same order, no FP contraction (setup.py).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <type_traits>
#include <vector>

#include "../bilinear.h"
#include "../checks.h"
#include "cpu_common.h"

namespace impls {
namespace {

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

// Crop (k, c0 .. c0 + CB) of one box: CB planes share each sample's table entry.
template <int64_t CB, typename scalar_t, typename T>
void crop_forward_block(const CropAxis<T>* yk, const CropAxis<T>* xk, int64_t crop_height, int64_t crop_width,
                        bool nearest, scalar_t ext, const scalar_t* plane0, int64_t plane_size, int64_t W,
                        scalar_t* dst0, int64_t dst_stride) {
  for (int64_t py = 0; py < crop_height; ++py) {
    const CropAxis<T>& y = yk[py];
    scalar_t* row0 = dst0 + py * crop_width;
    if (!y.valid) {
      for (int64_t j = 0; j < CB; ++j) std::fill(row0 + j * dst_stride, row0 + j * dst_stride + crop_width, ext);
      continue;
    }
    const int64_t top = y.lo * W, bottom = y.hi * W, near = y.nearest * W;
    for (int64_t px = 0; px < crop_width; ++px) {
      const CropAxis<T>& x = xk[px];
      scalar_t* out0 = row0 + px;
      if (!x.valid) {
        for (int64_t j = 0; j < CB; ++j) out0[j * dst_stride] = ext;
      } else if (nearest) {
        for (int64_t j = 0; j < CB; ++j) out0[j * dst_stride] = plane0[j * plane_size + near + x.nearest];
      } else {
        const int64_t o_tl = top + x.lo, o_tr = top + x.hi, o_bl = bottom + x.lo, o_br = bottom + x.hi;
        for (int64_t j = 0; j < CB; ++j) {
          const scalar_t* p = plane0 + j * plane_size;
          const T tl = static_cast<T>(p[o_tl]), tr = static_cast<T>(p[o_tr]);
          const T bl = static_cast<T>(p[o_bl]), br = static_cast<T>(p[o_br]);
          const T t = tl + (tr - tl) * x.lerp;
          const T b = bl + (br - bl) * x.lerp;
          out0[j * dst_stride] = static_cast<scalar_t>(t + (b - t) * y.lerp);
        }
      }
    }
  }
}

at::Tensor crop_and_resize_forward_cpu(const at::Tensor& image_, const at::Tensor& boxes_,
                                       const at::Tensor& box_index_, int64_t crop_height, int64_t crop_width,
                                       c10::string_view method, double extrapolation_value) {
  check_crop_and_resize(image_, boxes_, box_index_, crop_height, crop_width, method, c10::DeviceType::CPU);
  // A channels_last or strided image is copied once here (one pass over N*C*H*W) so the sampling loops read
  // planes with unit stride; for the usual contiguous input this is free.
  const at::Tensor image = image_.contiguous();
  const at::Tensor boxes = boxes_.contiguous();
  const at::Tensor box_index = box_index_.contiguous();
  const int64_t N = image.size(0), C = image.size(1), H = image.size(2), W = image.size(3);
  const int64_t K = boxes.size(0);
  check_box_index(box_index.data_ptr<int64_t>(), K, N);
  at::Tensor out = at::empty({K, C, crop_height, crop_width}, image.options());
  if (out.numel() == 0) return out;
  const bool nearest = method == "nearest";

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, image.scalar_type(), "crop_and_resize_forward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const scalar_t* img = image.const_data_ptr<scalar_t>();
    const scalar_t* bx = boxes.const_data_ptr<scalar_t>();
    const int64_t* idx = box_index.const_data_ptr<int64_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    const auto ys = crop_axis_tables<scalar_t, T>(bx, K, 0, 2, crop_height, H);
    const auto xs = crop_axis_tables<scalar_t, T>(bx, K, 1, 3, crop_width, W);
    const scalar_t ext = static_cast<scalar_t>(extrapolation_value);
    const int64_t cells = crop_height * crop_width, plane_size = H * W;

    at::parallel_for(0, channel_blocks(C) * K, grain_for(cells * kChannelBlock), [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t k = item % K;
        bool full;
        const int64_t c0 = block_start(item / K, C, full);
        const CropAxis<T>* yk = ys.data() + k * crop_height;
        const CropAxis<T>* xk = xs.data() + k * crop_width;
        const scalar_t* plane0 = img + (idx[k] * C + c0) * plane_size;
        scalar_t* dst0 = o + (k * C + c0) * cells;
        if (full) {
          crop_forward_block<kChannelBlock>(yk, xk, crop_height, crop_width, nearest, ext, plane0, plane_size, W,
                                            dst0, cells);
        } else {
          crop_forward_block<1>(yk, xk, crop_height, crop_width, nearest, ext, plane0, plane_size, W, dst0, cells);
        }
      }
    });
  });
  return out;
}

// Image gradient of one box into CB accumulator planes (acc0 + j * plane_size), in the reference's order.
template <int64_t CB, typename scalar_t, typename T>
void crop_image_grad_block(const CropAxis<T>* yk, const CropAxis<T>* xk, int64_t crop_height, int64_t crop_width,
                           bool nearest, const scalar_t* g0, int64_t g_stride, int64_t W, T* acc0,
                           int64_t plane_size) {
  for (int64_t py = 0; py < crop_height; ++py) {
    const CropAxis<T>& y = yk[py];
    if (!y.valid) continue;
    const int64_t top = y.lo * W, bottom = y.hi * W, near = y.nearest * W;
    for (int64_t px = 0; px < crop_width; ++px) {
      const CropAxis<T>& x = xk[px];
      if (!x.valid) continue;
      const int64_t cell = py * crop_width + px;
      if (nearest) {
        for (int64_t j = 0; j < CB; ++j) {
          acc0[j * plane_size + near + x.nearest] += static_cast<T>(g0[j * g_stride + cell]);
        }
        continue;
      }
      const int64_t o_tl = top + x.lo, o_tr = top + x.hi, o_bl = bottom + x.lo, o_br = bottom + x.hi;
      for (int64_t j = 0; j < CB; ++j) {
        T* a = acc0 + j * plane_size;
        const T gv = static_cast<T>(g0[j * g_stride + cell]);
        const T d_top = (1 - y.lerp) * gv;
        const T d_bottom = y.lerp * gv;
        a[o_tl] += (1 - x.lerp) * d_top;
        a[o_tr] += x.lerp * d_top;
        a[o_bl] += (1 - x.lerp) * d_bottom;
        a[o_br] += x.lerp * d_bottom;
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor> crop_and_resize_backward_cpu(const at::Tensor& grad_, const at::Tensor& image_,
                                                                const at::Tensor& boxes_,
                                                                const at::Tensor& box_index_, int64_t crop_height,
                                                                int64_t crop_width, c10::string_view method,
                                                                bool image_grad, bool boxes_grad) {
  check_crop_and_resize(image_, boxes_, box_index_, crop_height, crop_width, method, c10::DeviceType::CPU);
  check_grad(grad_, image_, boxes_.size(0), crop_height, crop_width);
  const at::Tensor image = image_.contiguous();  // one copy if strided, as in the forward
  const at::Tensor boxes = boxes_.contiguous();
  const at::Tensor box_index = box_index_.contiguous();
  const at::Tensor grad = grad_.contiguous();
  const int64_t N = image.size(0), C = image.size(1), H = image.size(2), W = image.size(3);
  const int64_t K = boxes.size(0);
  check_box_index(box_index.data_ptr<int64_t>(), K, N);
  const bool nearest = method == "nearest";
  // A gradient not asked for is an empty [0] tensor; the Python glue turns it into None.
  at::Tensor grad_image = image_grad ? at::zeros({N, C, H, W}, image.options()) : at::empty({0}, image.options());
  at::Tensor grad_boxes = boxes_grad ? at::zeros({K, 4}, boxes.options()) : at::empty({0}, boxes.options());
  if (K == 0 || C == 0) return {grad_image, grad_boxes};

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, image.scalar_type(), "crop_and_resize_backward_cpu", [&] {
    using T = at::opmath_type<scalar_t>;
    const scalar_t* img = image.const_data_ptr<scalar_t>();
    const scalar_t* bx = boxes.const_data_ptr<scalar_t>();
    const int64_t* idx = box_index.const_data_ptr<int64_t>();
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const auto ys = crop_axis_tables<scalar_t, T>(bx, K, 0, 2, crop_height, H);
    const auto xs = crop_axis_tables<scalar_t, T>(bx, K, 1, 3, crop_width, W);
    const int64_t cells = crop_height * crop_width;
    const int64_t plane_size = H * W;

    if (image_grad && plane_size > 0) {
      std::vector<int64_t> order, start;
      boxes_by_image(idx, K, N, order, start);
      scalar_t* gi = grad_image.mutable_data_ptr<scalar_t>();
      const int64_t blocks = channel_blocks(C);
      const int64_t work = K / std::max<int64_t>(N, 1) * cells * kChannelBlock;
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
            const CropAxis<T>* yk = ys.data() + k * crop_height;
            const CropAxis<T>* xk = xs.data() + k * crop_width;
            const scalar_t* g0 = g + (k * C + c0) * cells;
            if (full) {
              crop_image_grad_block<kChannelBlock>(yk, xk, crop_height, crop_width, nearest, g0, cells, W, acc0,
                                                   plane_size);
            } else {
              crop_image_grad_block<1>(yk, xk, crop_height, crop_width, nearest, g0, cells, W, acc0, plane_size);
            }
          }
          if (!direct) std::copy(scratch.begin(), scratch.begin() + cb * plane_size, out0);
        }
      });
    }

    // Nearest sampling has zero derivative with respect to the box almost everywhere: grad_boxes stays 0.
    if (boxes_grad && !nearest) {
      scalar_t* gb = grad_boxes.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, K, grain_for(C * cells), [&](int64_t begin, int64_t end) {
        std::vector<std::array<T, 4>> sums(end - begin, {T(0), T(0), T(0), T(0)});  // d y1, d x1, d y2, d x2
        for (int64_t c = 0; c < C; ++c) {
          for (int64_t k = begin; k < end; ++k) {
            const CropAxis<T>* yk = ys.data() + k * crop_height;
            const CropAxis<T>* xk = xs.data() + k * crop_width;
            T d_y1 = sums[k - begin][0], d_x1 = sums[k - begin][1];
            T d_y2 = sums[k - begin][2], d_x2 = sums[k - begin][3];
            const scalar_t* plane = img + (idx[k] * C + c) * plane_size;
            const scalar_t* gk = g + (k * C + c) * cells;
            for (int64_t py = 0; py < crop_height; ++py) {
              const CropAxis<T>& y = yk[py];
              if (!y.valid) continue;
              const scalar_t* top = plane + y.lo * W;
              const scalar_t* bottom = plane + y.hi * W;
              for (int64_t px = 0; px < crop_width; ++px) {
                const CropAxis<T>& x = xk[px];
                if (!x.valid) continue;
                const T gv = static_cast<T>(gk[py * crop_width + px]);
                const T tl = static_cast<T>(top[x.lo]), tr = static_cast<T>(top[x.hi]);
                const T bl = static_cast<T>(bottom[x.lo]), br = static_cast<T>(bottom[x.hi]);
                const T gy = gv * ((1 - x.lerp) * (bl - tl) + x.lerp * (br - tr));
                const T gx = gv * ((1 - y.lerp) * (tr - tl) + y.lerp * (br - bl));
                d_y1 += gy * y.d_lo;
                d_x1 += gx * x.d_lo;
                d_y2 += gy * y.d_hi;
                d_x2 += gx * x.d_hi;
              }
            }
            sums[k - begin] = {d_y1, d_x1, d_y2, d_x2};
          }
        }
        for (int64_t k = begin; k < end; ++k) {
          for (int j = 0; j < 4; ++j) gb[k * 4 + j] = static_cast<scalar_t>(sums[k - begin][j]);
        }
      });
    }
  });
  return {grad_image, grad_boxes};
}

}  // namespace

TORCH_LIBRARY_IMPL(impls, CPU, m) {
  m.impl("crop_and_resize_forward", TORCH_FN(crop_and_resize_forward_cpu));
  m.impl("crop_and_resize_backward", TORCH_FN(crop_and_resize_backward_cpu));
}

}  // namespace impls
