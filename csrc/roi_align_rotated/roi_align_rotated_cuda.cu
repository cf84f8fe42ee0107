// roi_align_rotated on CUDA: detectron2's ROIAlignRotated with box gradients (CONVENTIONS.md §3b). The sampling
// math is rotated_geometry.h, the header the CPU kernels use (and the CPU tests check bit for bit against
// impls/ops/roi_align_rotated/reference.py); the geometry is evaluated in double for every dtype, as there.
//
// Forward: one thread per output element (k, c, ph, pw), looping over the bin's samples; the box geometry (a cos,
// a sin and a few flops) is recomputed per thread rather than staged through memory, as roi_align's kernel does.
// Input gradient: by default one thread per incoming gradient element, atomically adding each sample's four taps
// into a gradient of T (half types accumulate in float and are rounded once at the end, as on the CPU). Under
// torch.use_deterministic_algorithms(True): the atomic-free "pull" of cuda_common.cuh (every tap listed once in
// the reference's order, sorted by pixel, each output element summing its pixel's taps in that order). With a
// fixed sampling_ratio the number of taps is known on the host; the adaptive grid makes it data-dependent, so that
// path reads its total back to the host (one sync).
// Box gradient: one block per box, a fixed partition of (channel, cell) over its threads and a fixed tree
// reduction: deterministic.
// Invalid input that slipped past the Python checks (a batch column outside [0, N), a non-finite w or h with the
// adaptive grid) cannot raise here without a device sync: such a box reads nothing, its output is NaN and it
// contributes no gradient.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>
#include <type_traits>

#include "common/bilinear.h"
#include "common/checks.h"
#include "common/cuda_common.cuh"
#include "roi_align_rotated/rotated_geometry.h"

namespace impls {
namespace {

struct RotatedShape {
  int64_t N, C, H, W, K, PH, PW, sampling_ratio;
  double spatial_scale;
  bool clockwise;
  __host__ __device__ int64_t cells() const { return PH * PW; }
};

struct RotatedBox {
  bool ok;  // the box may be read: batch index in [0, N) and, with the adaptive grid, a finite w and h
  int64_t n;
  RotatedGeometry<double> g;
};

template <typename scalar_t>
__device__ __forceinline__ RotatedBox rotated_box(const scalar_t* rois, const RotatedShape& s, int64_t k) {
  RotatedBox r{};
  const scalar_t* roi = rois + k * 6;
  const double b = static_cast<double>(roi[0]);
  const double w = static_cast<double>(roi[3]), h = static_cast<double>(roi[4]);
  r.ok = roi_batch_valid(b, s.N) && (s.sampling_ratio > 0 || (isfinite(w) && isfinite(h)));
  if (!r.ok) return r;
  r.n = static_cast<int64_t>(b);
  r.g = rotated_geometry<double>(static_cast<double>(roi[1]), static_cast<double>(roi[2]), w, h,
                                 static_cast<double>(roi[5]), s.spatial_scale, s.PH, s.PW, s.sampling_ratio,
                                 s.clockwise);
  return r;
}

template <typename scalar_t, typename T>
__global__ void rotated_forward_kernel(RotatedShape s, const scalar_t* __restrict__ input,
                                       const scalar_t* __restrict__ rois, scalar_t* __restrict__ out) {
  const int64_t total = s.K * s.C * s.cells();
  IMPLS_GRID_STRIDE(i, total) {
    const int64_t pw = i % s.PW, ph = (i / s.PW) % s.PH;
    const int64_t c = (i / s.cells()) % s.C, k = i / (s.cells() * s.C);
    const RotatedBox box = rotated_box(rois, s, k);
    if (!box.ok) {
      out[i] = static_cast<scalar_t>(std::numeric_limits<T>::quiet_NaN());
      continue;
    }
    const scalar_t* plane = input + (box.n * s.C + c) * s.H * s.W;
    T acc = 0;
    for (int64_t iy = 0; iy < box.g.grid_h; ++iy) {
      for (int64_t ix = 0; ix < box.g.grid_w; ++ix) {
        const RotatedTap<T> t = rotated_tap<T>(rotated_point(box.g, ph, pw, iy, ix), s.H, s.W);
        if (!t.valid) continue;
        const T w1 = t.hy * t.hx, w2 = t.hy * t.lx, w3 = t.ly * t.hx, w4 = t.ly * t.lx;
        acc += w1 * static_cast<T>(plane[t.y_low * s.W + t.x_low]) +
               w2 * static_cast<T>(plane[t.y_low * s.W + t.x_high]) +
               w3 * static_cast<T>(plane[t.y_high * s.W + t.x_low]) +
               w4 * static_cast<T>(plane[t.y_high * s.W + t.x_high]);
      }
    }
    out[i] = static_cast<scalar_t>(acc / static_cast<T>(box.g.count));
  }
}

// Atomic input gradient: one thread per grad element, adding (g * w) / count for each of a sample's four taps into
// the gradient of T (native float/double atomics).
template <typename scalar_t, typename T>
__global__ void rotated_input_grad_atomic_kernel(RotatedShape s, T* __restrict__ grad_input,
                                                 const scalar_t* __restrict__ grad,
                                                 const scalar_t* __restrict__ rois) {
  const int64_t total = s.K * s.C * s.cells();
  IMPLS_GRID_STRIDE(i, total) {
    const int64_t pw = i % s.PW, ph = (i / s.PW) % s.PH;
    const int64_t c = (i / s.cells()) % s.C, k = i / (s.cells() * s.C);
    const RotatedBox box = rotated_box(rois, s, k);
    if (!box.ok) continue;
    const T count = static_cast<T>(box.g.count);
    T* plane = grad_input + (box.n * s.C + c) * s.H * s.W;
    const T gv = static_cast<T>(grad[i]);
    for (int64_t iy = 0; iy < box.g.grid_h; ++iy) {
      for (int64_t ix = 0; ix < box.g.grid_w; ++ix) {
        const RotatedTap<T> t = rotated_tap<T>(rotated_point(box.g, ph, pw, iy, ix), s.H, s.W);
        if (!t.valid) continue;
        gpuAtomicAddNoReturn(plane + t.y_low * s.W + t.x_low, gv * (t.hy * t.hx) / count);
        gpuAtomicAddNoReturn(plane + t.y_low * s.W + t.x_high, gv * (t.hy * t.lx) / count);
        gpuAtomicAddNoReturn(plane + t.y_high * s.W + t.x_low, gv * (t.ly * t.hx) / count);
        gpuAtomicAddNoReturn(plane + t.y_high * s.W + t.x_high, gv * (t.ly * t.lx) / count);
      }
    }
  }
}

// Deterministic input gradient, step 1a: samples per box. With a fixed sampling_ratio every box gets
// cells * ratio^2 (a box that may not be read too: its taps are empty), so the total is known on the host;
// adaptive, a box that may not be read gets 0.
template <typename scalar_t>
__global__ void rotated_sample_counts_kernel(RotatedShape s, const scalar_t* __restrict__ rois,
                                             int64_t* __restrict__ samples) {
  IMPLS_GRID_STRIDE(k, s.K) {
    if (s.sampling_ratio > 0) {
      samples[k] = s.cells() * s.sampling_ratio * s.sampling_ratio;
      continue;
    }
    const RotatedBox box = rotated_box(rois, s, k);
    const int64_t gh = box.g.grid_h > 0 ? box.g.grid_h : 0, gw = box.g.grid_w > 0 ? box.g.grid_w : 0;
    samples[k] = box.ok ? s.cells() * gh * gw : 0;
  }
}

// Step 1b: the four taps of every sample, in the reference's order (box, ph, pw, iy, ix, corner), as entries
// (pixel n * H * W + y * W + x or -1, output cell k * cells + cell, a, b) that gather_taps sums as (g * a) / b:
// (g * (hy * hx)) / count, the atomic kernel's and the reference's expression.
template <typename scalar_t, typename T>
__global__ void rotated_taps_kernel(RotatedShape s, const scalar_t* __restrict__ rois,
                                    const int64_t* __restrict__ cum_samples, int64_t total_samples,
                                    int64_t* __restrict__ pixel, int64_t* __restrict__ cell, T* __restrict__ a,
                                    T* __restrict__ b) {
  IMPLS_GRID_STRIDE(i, total_samples) {
    // The box of sample i: the first k with cum_samples[k] > i.
    int64_t lo = 0, hi = s.K - 1;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (cum_samples[mid] > i) hi = mid; else lo = mid + 1;
    }
    const int64_t k = lo;
    const int64_t local = i - (k > 0 ? cum_samples[k - 1] : 0);
    const RotatedBox box = rotated_box(rois, s, k);
    // Adaptive, only boxes that may be read have samples; a fixed grid is the same for every box.
    const int64_t gh = box.ok ? box.g.grid_h : s.sampling_ratio, gw = box.ok ? box.g.grid_w : s.sampling_ratio;
    const int64_t ix = local % gw, iy = (local / gw) % gh;
    const int64_t cell_in_box = local / (gw * gh);
    const int64_t pw = cell_in_box % s.PW, ph = cell_in_box / s.PW;
    const RotatedTap<T> t =
        box.ok ? rotated_tap<T>(rotated_point(box.g, ph, pw, iy, ix), s.H, s.W) : RotatedTap<T>{};
    const int64_t base = box.ok ? box.n * s.H * s.W : 0;
    const T count = static_cast<T>(box.ok ? box.g.count : 1);
    for (int corner = 0; corner < 4; ++corner) {
      const int64_t e = i * 4 + corner;
      const bool high_y = corner >= 2, high_x = corner % 2 == 1;
      cell[e] = k * s.cells() + cell_in_box;
      b[e] = count;
      if (!t.valid) {
        pixel[e] = -1;
        a[e] = 0;
        continue;
      }
      pixel[e] = base + (high_y ? t.y_high : t.y_low) * s.W + (high_x ? t.x_high : t.x_low);
      a[e] = (high_y ? t.ly : t.hy) * (high_x ? t.lx : t.hx);
    }
  }
}

template <typename T>
struct RotatedCombine {
  __device__ __forceinline__ T operator()(T g, T a, T b) const { return g * a / b; }
};

// Box gradient: one block per box; rois[:, 0] gets none.
template <typename scalar_t, typename T>
__global__ void rotated_boxes_grad_kernel(RotatedShape s, const scalar_t* __restrict__ input,
                                          const scalar_t* __restrict__ grad, const scalar_t* __restrict__ rois,
                                          scalar_t* __restrict__ grad_rois) {
  __shared__ T shared[5 * kThreads];
  const int64_t k = blockIdx.x;
  T sums[5] = {0, 0, 0, 0, 0};  // d cx, d cy, d w, d h, d angle
  const RotatedBox box = rotated_box(rois, s, k);
  const int64_t items = box.ok ? s.C * s.cells() : 0;
  const RotatedGeometry<double>& g = box.g;
  const T count = static_cast<T>(g.count);
  const T scale = static_cast<T>(s.spatial_scale);  // d y / d cy and d x / d cx
  for (int64_t item = threadIdx.x; item < items; item += blockDim.x) {
    const int64_t c = item / s.cells(), cell = item % s.cells();
    const int64_t ph = cell / s.PW, pw = cell % s.PW;
    const scalar_t* plane = input + (box.n * s.C + c) * s.H * s.W;
    const T gv = static_cast<T>(grad[k * s.C * s.cells() + item]);
    for (int64_t iy = 0; iy < g.grid_h; ++iy) {
      for (int64_t ix = 0; ix < g.grid_w; ++ix) {
        const RotatedPoint<double> pt = rotated_point(g, ph, pw, iy, ix);
        const RotatedTap<T> t = rotated_tap<T>(pt, s.H, s.W);
        if (!t.valid) continue;
        const RotatedSlopes<T> sl = rotated_slopes<T>(g, pt, ph, pw, iy, ix, s.PH, s.PW, s.spatial_scale);
        const T v1 = static_cast<T>(plane[t.y_low * s.W + t.x_low]);
        const T v2 = static_cast<T>(plane[t.y_low * s.W + t.x_high]);
        const T v3 = static_cast<T>(plane[t.y_high * s.W + t.x_low]);
        const T v4 = static_cast<T>(plane[t.y_high * s.W + t.x_high]);
        if (t.y_moves) {
          const T gy = gv * (t.hx * (v3 - v1) + t.lx * (v4 - v2)) / count;
          sums[1] += gy * scale;
          sums[2] += gy * sl.dy_dw;
          sums[3] += gy * sl.dy_dh;
          sums[4] += gy * sl.dy_da;
        }
        if (t.x_moves) {
          const T gx = gv * (t.hy * (v2 - v1) + t.ly * (v4 - v3)) / count;
          sums[0] += gx * scale;
          sums[2] += gx * sl.dx_dw;
          sums[3] += gx * sl.dx_dh;
          sums[4] += gx * sl.dx_da;
        }
      }
    }
  }
  block_sum<T, 5>(sums, shared);
  if (threadIdx.x == 0) {
    for (int j = 0; j < 5; ++j) grad_rois[k * 6 + 1 + j] = static_cast<scalar_t>(sums[j]);
  }
}

// ------------------------------------------------------------------------------------------------ the operators

at::Tensor roi_align_rotated_forward_cuda(const at::Tensor& input_, const at::Tensor& rois_, double spatial_scale,
                                          int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                          bool clockwise) {
  check_roi_align(input_, "input", rois_, pooled_height, pooled_width, c10::DeviceType::CUDA, kRoiColumns);
  const c10::cuda::CUDAGuard guard(input_.device());
  // The kernels index NCHW: a channels_last or strided input is copied once.
  const at::Tensor input = input_.contiguous();
  const at::Tensor rois = rois_.contiguous();
  const RotatedShape s{input.size(0), input.size(1), input.size(2), input.size(3), rois.size(0),
                       pooled_height, pooled_width,  sampling_ratio, spatial_scale,  clockwise};
  at::Tensor out = at::empty({s.K, s.C, s.PH, s.PW}, input.options());
  if (out.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_rotated_forward_cuda",
                                    [&] {
      using T = at::opmath_type<scalar_t>;
      rotated_forward_kernel<scalar_t, T><<<blocks_for(out.numel()), kThreads, 0,
                                            at::cuda::getCurrentCUDAStream()>>>(
          s, input.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  // A channels_last caller gets a channels_last output (one copy of the output).
  return out.contiguous(input_.suggest_memory_format());
}

at::Tensor roi_align_rotated_backward_input_cuda(const at::Tensor& grad_, const at::Tensor& rois_,
                                                 double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                                 int64_t batch_size, int64_t channels, int64_t height, int64_t width,
                                                 int64_t sampling_ratio, bool clockwise) {
  check_roi_align(grad_, "grad", rois_, pooled_height, pooled_width, c10::DeviceType::CUDA, kRoiColumns);
  check_grad(grad_, rois_.size(0), channels, pooled_height, pooled_width);
  check_input_sizes(batch_size, channels, height, width);
  const c10::cuda::CUDAGuard guard(grad_.device());
  const at::Tensor grad = grad_.contiguous();
  const at::Tensor rois = rois_.contiguous();
  const RotatedShape s{batch_size,   channels,     height,         width,         rois.size(0),
                       pooled_height, pooled_width, sampling_ratio, spatial_scale, clockwise};
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  const auto stream = at::cuda::getCurrentCUDAStream();
  at::Tensor grad_input;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                  "roi_align_rotated_backward_input_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const scalar_t* r = rois.const_data_ptr<scalar_t>();
    const auto acc_options = grad.options().dtype(c10::CppTypeToScalarType<T>::value);
    if (deterministic) {
      grad_input = at::empty({s.N, s.C, s.H, s.W}, grad.options());
      const auto index_options = grad.options().dtype(at::kLong);
      int64_t total_samples = 0;
      at::Tensor cum;
      if (s.K > 0) {
        at::Tensor samples = at::empty({s.K}, index_options);
        rotated_sample_counts_kernel<scalar_t><<<blocks_for(s.K), kThreads, 0, stream>>>(
            s, r, samples.mutable_data_ptr<int64_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        cum = at::cumsum(samples, 0);
        // Adaptive: the one host sync, the entry count.
        total_samples = s.sampling_ratio > 0 ? s.K * s.cells() * s.sampling_ratio * s.sampling_ratio
                                             : cum[s.K - 1].item<int64_t>();
      }
      TapEntries e{at::empty({total_samples * 4}, index_options), at::empty({total_samples * 4}, index_options),
                   at::empty({total_samples * 4}, acc_options), at::empty({total_samples * 4}, acc_options)};
      if (total_samples > 0) {
        rotated_taps_kernel<scalar_t, T><<<blocks_for(total_samples), kThreads, 0, stream>>>(
            s, r, cum.const_data_ptr<int64_t>(), total_samples, e.pixel.mutable_data_ptr<int64_t>(),
            e.cell.mutable_data_ptr<int64_t>(), e.a.mutable_data_ptr<T>(), e.b.mutable_data_ptr<T>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      gather_taps<scalar_t, T>(e, grad, {grad_input}, s.cells(), RotatedCombine<T>{});
      return;
    }
    at::Tensor acc = at::zeros({s.N, s.C, s.H, s.W}, acc_options);
    if (grad.numel() > 0) {
      rotated_input_grad_atomic_kernel<scalar_t, T><<<blocks_for(grad.numel()), kThreads, 0, stream>>>(
          s, acc.mutable_data_ptr<T>(), grad.const_data_ptr<scalar_t>(), r);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    grad_input = std::is_same_v<scalar_t, T> ? acc : acc.to(grad.scalar_type());
  });
  // The incoming gradient's layout.
  return grad_input.contiguous(grad_.suggest_memory_format());
}

at::Tensor roi_align_rotated_backward_boxes_cuda(const at::Tensor& grad_, const at::Tensor& input_,
                                                 const at::Tensor& rois_, double spatial_scale,
                                                 int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                                 bool clockwise) {
  check_roi_align(input_, "input", rois_, pooled_height, pooled_width, c10::DeviceType::CUDA, kRoiColumns);
  check_same(grad_, input_, "grad", "input");
  check_grad(grad_, rois_.size(0), input_.size(1), pooled_height, pooled_width);
  const c10::cuda::CUDAGuard guard(input_.device());
  const at::Tensor input = input_.contiguous();
  const at::Tensor grad = grad_.contiguous();
  const at::Tensor rois = rois_.contiguous();
  const RotatedShape s{input.size(0), input.size(1), input.size(2), input.size(3), rois.size(0),
                       pooled_height, pooled_width,  sampling_ratio, spatial_scale,  clockwise};
  at::Tensor grad_rois = at::zeros({s.K, 6}, rois.options());
  if (s.K == 0) return grad_rois;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "roi_align_rotated_backward_boxes_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    rotated_boxes_grad_kernel<scalar_t, T><<<static_cast<unsigned int>(s.K), kThreads, 0,
                                             at::cuda::getCurrentCUDAStream()>>>(
        s, input.const_data_ptr<scalar_t>(), grad.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(),
        grad_rois.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_rois;
}

}  // namespace

TORCH_LIBRARY_IMPL(impls, CUDA, m) {
  m.impl("roi_align_rotated_forward", TORCH_FN(roi_align_rotated_forward_cuda));
  m.impl("roi_align_rotated_backward_input", TORCH_FN(roi_align_rotated_backward_input_cuda));
  m.impl("roi_align_rotated_backward_boxes", TORCH_FN(roi_align_rotated_backward_boxes_cuda));
}

}  // namespace impls
