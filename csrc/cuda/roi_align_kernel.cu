// roi_align on CUDA: the same sampling math as the CPU kernels (csrc/bilinear.h), in the same precision.
//
// Geometry in double: a box's start, bin size and every sample position are computed in double for every dtype,
// as the CPU kernel and impls/backends/reference.py do; only the interpolation weights are then rounded to T (float for
// half/bfloat16/float32). A sample that lands exactly on a pixel row (common with integer or half-precision
// boxes) stays there, instead of falling to 27.999998 in float and taking the other row pair's slope in the box
// gradient.
// Forward: one thread per output element (k, c, ph, pw), looping over the bin's samples; the per-box geometry
// is a few flops and is recomputed per thread rather than staged through memory.
// Input gradient: by default one thread per incoming gradient element, atomically adding each sample's four
// taps into a gradient of T (half types accumulate in float and are rounded once at the end, as on the CPU).
// With torch.use_deterministic_algorithms(True): the atomic-free "pull" of cuda_common.cuh; the adaptive grid
// makes the number of taps per box data-dependent, so this path reads its total back to the host (one sync).
// Box gradient: one block per box, a fixed partition of (channel, cell) over its threads and a fixed tree
// reduction: deterministic.
// Invalid input that slipped past the Python checks (a batch column outside [0, N), a non-finite box with
// adaptive sampling) cannot raise here without a device sync; such a box reads nothing: its output is NaN and
// it contributes no gradient. An empty map (H or W = 0) has no in-range sample: outputs are 0, as on the CPU.
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

#include "../bilinear.h"
#include "../checks.h"
#include "cuda_common.cuh"

namespace impls {
namespace {

struct RoiShape {
  int64_t N, C, H, W, K, PH, PW, sampling_ratio;
  bool aligned;
  __host__ __device__ int64_t cells() const { return PH * PW; }
};

struct RoiBox {
  bool ok;  // the box may be read: batch index in [0, N) and, with adaptive sampling, a finite box
  int64_t n;
  RoiGeometry<double> g;
};

template <typename scalar_t>
__device__ __forceinline__ RoiBox roi_box(const scalar_t* rois, const RoiShape& s, double spatial_scale, int64_t k) {
  RoiBox r{};
  const scalar_t* roi = rois + k * 5;
  const double b = static_cast<double>(roi[0]);
  const double x1 = static_cast<double>(roi[1]), y1 = static_cast<double>(roi[2]);
  const double x2 = static_cast<double>(roi[3]), y2 = static_cast<double>(roi[4]);
  r.ok = roi_batch_valid(b, s.N) &&
         (s.sampling_ratio > 0 || (isfinite(x1) && isfinite(y1) && isfinite(x2) && isfinite(y2)));
  if (!r.ok) return r;
  r.n = static_cast<int64_t>(b);
  r.g = roi_geometry<double>(x1, y1, x2, y2, spatial_scale, s.PH, s.PW, s.sampling_ratio, s.aligned);
  return r;
}

// One sample (iy, ix) of bin (ph, pw): its corners, its weights in T, and for the box gradient the derivative of
// each coordinate with respect to the box start and end (spatial_scale * (1 - position), spatial_scale * position).
// The same values as RoiAxis in csrc/cpu/roi_align_kernel.cpp.
template <typename T>
struct RoiTap {
  bool valid;  // inside [-1, size] on both axes and the map is not empty
  RoiCorner<double> y, x;
  T ly, hy, lx, hx;
  T y_scale_lo, y_scale_hi, x_scale_lo, x_scale_hi;
};

template <typename T>
__device__ __forceinline__ RoiTap<T> roi_tap(const RoiShape& s, const RoiGeometry<double>& g, double spatial_scale,
                                             int64_t ph, int64_t pw, int64_t iy, int64_t ix) {
  RoiTap<T> t{};
  const double y = roi_sample(g.y_start, ph, g.bin_h, iy, g.grid_h);
  const double x = roi_sample(g.x_start, pw, g.bin_w, ix, g.grid_w);
  t.valid = roi_in_range(y, s.H) && roi_in_range(x, s.W) && s.H > 0 && s.W > 0;
  if (!t.valid) return t;
  t.y = roi_corner(y, s.H);
  t.x = roi_corner(x, s.W);
  t.ly = static_cast<T>(t.y.frac);
  t.hy = static_cast<T>(1.0 - t.y.frac);
  t.lx = static_cast<T>(t.x.frac);
  t.hx = static_cast<T>(1.0 - t.x.frac);
  const double ay = roi_position<double>(ph, iy, g.grid_h, s.PH, g.h_clamped);
  const double ax = roi_position<double>(pw, ix, g.grid_w, s.PW, g.w_clamped);
  t.y_scale_lo = static_cast<T>(spatial_scale * (1.0 - ay));
  t.y_scale_hi = static_cast<T>(spatial_scale * ay);
  t.x_scale_lo = static_cast<T>(spatial_scale * (1.0 - ax));
  t.x_scale_hi = static_cast<T>(spatial_scale * ax);
  return t;
}

template <typename scalar_t, typename T>
__global__ void roi_forward_kernel(RoiShape s, double spatial_scale, const scalar_t* __restrict__ input,
                                   const scalar_t* __restrict__ rois, scalar_t* __restrict__ out) {
  const int64_t total = s.K * s.C * s.cells();
  IMPLS_GRID_STRIDE(i, total) {
    const int64_t pw = i % s.PW, ph = (i / s.PW) % s.PH;
    const int64_t c = (i / s.cells()) % s.C, k = i / (s.cells() * s.C);
    const RoiBox box = roi_box(rois, s, spatial_scale, k);
    if (!box.ok) {
      out[i] = static_cast<scalar_t>(std::numeric_limits<T>::quiet_NaN());
      continue;
    }
    const RoiGeometry<double>& g = box.g;
    const scalar_t* plane = input + (box.n * s.C + c) * s.H * s.W;
    T acc = 0;
    for (int64_t iy = 0; iy < g.grid_h; ++iy) {
      for (int64_t ix = 0; ix < g.grid_w; ++ix) {
        const RoiTap<T> t = roi_tap<T>(s, g, spatial_scale, ph, pw, iy, ix);
        if (!t.valid) continue;
        const T w1 = t.hy * t.hx, w2 = t.hy * t.lx, w3 = t.ly * t.hx, w4 = t.ly * t.lx;
        acc += w1 * static_cast<T>(plane[t.y.low * s.W + t.x.low]) +
               w2 * static_cast<T>(plane[t.y.low * s.W + t.x.high]) +
               w3 * static_cast<T>(plane[t.y.high * s.W + t.x.low]) +
               w4 * static_cast<T>(plane[t.y.high * s.W + t.x.high]);
      }
    }
    out[i] = static_cast<scalar_t>(acc / static_cast<T>(g.count));
  }
}

// Atomic input gradient: one thread per grad element, adding (g * w) / count for each of a sample's four taps
// into grad_input, a tensor of T (native float/double atomics).
template <typename scalar_t, typename T>
__global__ void roi_input_grad_atomic_kernel(RoiShape s, double spatial_scale, const scalar_t* __restrict__ grad,
                                             const scalar_t* __restrict__ rois, T* __restrict__ grad_input) {
  const int64_t total = s.K * s.C * s.cells();
  IMPLS_GRID_STRIDE(i, total) {
    const int64_t pw = i % s.PW, ph = (i / s.PW) % s.PH;
    const int64_t c = (i / s.cells()) % s.C, k = i / (s.cells() * s.C);
    const RoiBox box = roi_box(rois, s, spatial_scale, k);
    if (!box.ok) continue;
    const RoiGeometry<double>& g = box.g;
    const T count = static_cast<T>(g.count);
    T* plane = grad_input + (box.n * s.C + c) * s.H * s.W;
    const T gv = static_cast<T>(grad[i]);
    for (int64_t iy = 0; iy < g.grid_h; ++iy) {
      for (int64_t ix = 0; ix < g.grid_w; ++ix) {
        const RoiTap<T> t = roi_tap<T>(s, g, spatial_scale, ph, pw, iy, ix);
        if (!t.valid) continue;
        gpuAtomicAddNoReturn(plane + t.y.low * s.W + t.x.low, gv * (t.hy * t.hx) / count);
        gpuAtomicAddNoReturn(plane + t.y.low * s.W + t.x.high, gv * (t.hy * t.lx) / count);
        gpuAtomicAddNoReturn(plane + t.y.high * s.W + t.x.low, gv * (t.ly * t.hx) / count);
        gpuAtomicAddNoReturn(plane + t.y.high * s.W + t.x.high, gv * (t.ly * t.lx) / count);
      }
    }
  }
}

// Deterministic input gradient, step 1a: samples per box (0 for a box that may not be read).
template <typename scalar_t>
__global__ void roi_sample_counts_kernel(RoiShape s, double spatial_scale, const scalar_t* __restrict__ rois,
                                         int64_t* __restrict__ samples) {
  IMPLS_GRID_STRIDE(k, s.K) {
    const RoiBox box = roi_box(rois, s, spatial_scale, k);
    const int64_t gh = box.g.grid_h > 0 ? box.g.grid_h : 0, gw = box.g.grid_w > 0 ? box.g.grid_w : 0;
    samples[k] = box.ok ? s.cells() * gh * gw : 0;
  }
}

// Step 1b: the four taps of every sample, in the reference's order (box, ph, pw, iy, ix, corner).
// Contribution of an entry: (g * a) / b = (g * (hy * hx)) / count etc.
template <typename scalar_t, typename T>
__global__ void roi_taps_kernel(RoiShape s, double spatial_scale, const scalar_t* __restrict__ rois,
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
    const RoiBox box = roi_box(rois, s, spatial_scale, k);
    const RoiGeometry<double>& g = box.g;  // box.ok: boxes that may not be read have no samples
    const int64_t ix = local % g.grid_w, iy = (local / g.grid_w) % g.grid_h;
    const int64_t cell_in_box = local / (g.grid_w * g.grid_h);
    const int64_t pw = cell_in_box % s.PW, ph = cell_in_box / s.PW;
    const RoiTap<T> t = roi_tap<T>(s, g, spatial_scale, ph, pw, iy, ix);
    const int64_t base = box.n * s.H * s.W;
    const T count = static_cast<T>(g.count);
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
      pixel[e] = base + (high_y ? t.y.high : t.y.low) * s.W + (high_x ? t.x.high : t.x.low);
      a[e] = (high_y ? t.ly : t.hy) * (high_x ? t.lx : t.hx);
    }
  }
}

template <typename T>
struct RoiCombine {
  __device__ __forceinline__ T operator()(T g, T a, T b) const { return g * a / b; }
};

// Box gradient: one block per box; rois[:, 0] gets none.
template <typename scalar_t, typename T>
__global__ void roi_boxes_grad_kernel(RoiShape s, double spatial_scale, const scalar_t* __restrict__ grad,
                                      const scalar_t* __restrict__ input, const scalar_t* __restrict__ rois,
                                      scalar_t* __restrict__ grad_rois) {
  __shared__ T shared[4 * kThreads];
  const int64_t k = blockIdx.x;
  T sums[4] = {0, 0, 0, 0};  // d x1, d y1, d x2, d y2
  const RoiBox box = roi_box(rois, s, spatial_scale, k);
  const int64_t items = box.ok ? s.C * s.cells() : 0;
  const RoiGeometry<double>& g = box.g;
  const T count = static_cast<T>(g.count);
  for (int64_t item = threadIdx.x; item < items; item += blockDim.x) {
    const int64_t c = item / s.cells(), cell = item % s.cells();
    const int64_t ph = cell / s.PW, pw = cell % s.PW;
    const scalar_t* plane = input + (box.n * s.C + c) * s.H * s.W;
    const T gv = static_cast<T>(grad[k * s.C * s.cells() + item]);
    for (int64_t iy = 0; iy < g.grid_h; ++iy) {
      for (int64_t ix = 0; ix < g.grid_w; ++ix) {
        const RoiTap<T> t = roi_tap<T>(s, g, spatial_scale, ph, pw, iy, ix);
        if (!t.valid) continue;
        const T v1 = static_cast<T>(plane[t.y.low * s.W + t.x.low]);
        const T v2 = static_cast<T>(plane[t.y.low * s.W + t.x.high]);
        const T v3 = static_cast<T>(plane[t.y.high * s.W + t.x.low]);
        const T v4 = static_cast<T>(plane[t.y.high * s.W + t.x.high]);
        if (t.y.moves) {
          const T gy = gv * (t.hx * (v3 - v1) + t.lx * (v4 - v2)) / count;
          sums[1] += gy * t.y_scale_lo;
          sums[3] += gy * t.y_scale_hi;
        }
        if (t.x.moves) {
          const T gx = gv * (t.hy * (v2 - v1) + t.ly * (v4 - v3)) / count;
          sums[0] += gx * t.x_scale_lo;
          sums[2] += gx * t.x_scale_hi;
        }
      }
    }
  }
  block_sum<T, 4>(sums, shared);
  if (threadIdx.x == 0) {
    for (int j = 0; j < 4; ++j) grad_rois[k * 5 + 1 + j] = static_cast<scalar_t>(sums[j]);
  }
}

at::Tensor roi_align_forward_cuda(const at::Tensor& input_, const at::Tensor& rois_, double spatial_scale,
                                  int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  check_roi_align(input_, "input", rois_, pooled_height, pooled_width, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(input_.device());
  // A channels_last or strided input is copied once here (one pass over N*C*H*W); the kernels index NCHW.
  const at::Tensor input = input_.contiguous();
  const at::Tensor rois = rois_.contiguous();
  const RoiShape s{input.size(0), input.size(1), input.size(2), input.size(3), rois.size(0),
                   pooled_height, pooled_width, sampling_ratio, aligned};
  at::Tensor out = at::empty({s.K, s.C, s.PH, s.PW}, input.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_forward_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    roi_forward_kernel<scalar_t, T><<<blocks_for(out.numel()), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        s, spatial_scale, input.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(),
        out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // The kernels index NCHW; a channels_last caller gets a channels_last output (one copy of the output).
  return out.contiguous(input_.suggest_memory_format());
}

at::Tensor roi_align_backward_input_cuda(const at::Tensor& grad_, const at::Tensor& rois_, double spatial_scale,
                                         int64_t pooled_height, int64_t pooled_width, int64_t N, int64_t C,
                                         int64_t H, int64_t W, int64_t sampling_ratio, bool aligned) {
  check_roi_align(grad_, "grad", rois_, pooled_height, pooled_width, c10::DeviceType::CUDA);
  check_grad(grad_, rois_.size(0), C, pooled_height, pooled_width);
  check_input_sizes(N, C, H, W);
  const c10::cuda::CUDAGuard guard(grad_.device());
  const at::Tensor rois = rois_.contiguous();
  const at::Tensor grad = grad_.contiguous();
  const RoiShape s{N, C, H, W, rois.size(0), pooled_height, pooled_width, sampling_ratio, aligned};
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  const auto stream = at::cuda::getCurrentCUDAStream();
  at::Tensor grad_input;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_backward_input_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const scalar_t* r = rois.const_data_ptr<scalar_t>();
    const auto acc_options = grad.options().dtype(c10::CppTypeToScalarType<T>::value);
    if (deterministic) {
      grad_input = at::empty({N, C, H, W}, grad.options());
      const auto index_options = grad.options().dtype(at::kLong);
      int64_t total_samples = 0;
      at::Tensor cum;
      if (s.K > 0) {
        at::Tensor samples = at::empty({s.K}, index_options);
        roi_sample_counts_kernel<scalar_t><<<blocks_for(s.K), kThreads, 0, stream>>>(
            s, spatial_scale, r, samples.mutable_data_ptr<int64_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        cum = at::cumsum(samples, 0);
        total_samples = cum[s.K - 1].item<int64_t>();  // the one host sync: the entry count
      }
      TapEntries e{at::empty({total_samples * 4}, index_options), at::empty({total_samples * 4}, index_options),
                   at::empty({total_samples * 4}, acc_options), at::empty({total_samples * 4}, acc_options)};
      if (total_samples > 0) {
        roi_taps_kernel<scalar_t, T><<<blocks_for(total_samples), kThreads, 0, stream>>>(
            s, spatial_scale, r, cum.const_data_ptr<int64_t>(), total_samples, e.pixel.mutable_data_ptr<int64_t>(),
            e.cell.mutable_data_ptr<int64_t>(), e.a.mutable_data_ptr<T>(), e.b.mutable_data_ptr<T>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      gather_taps<scalar_t, T>(e, grad, grad_input, s.cells(), RoiCombine<T>{});
      return;
    }
    at::Tensor acc = at::zeros({N, C, H, W}, acc_options);
    if (grad.numel() > 0) {
      roi_input_grad_atomic_kernel<scalar_t, T><<<blocks_for(grad.numel()), kThreads, 0, stream>>>(
          s, spatial_scale, grad.const_data_ptr<scalar_t>(), r, acc.mutable_data_ptr<T>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    grad_input = std::is_same_v<scalar_t, T> ? acc : acc.to(grad.scalar_type());
  });
  return grad_input.contiguous(grad_.suggest_memory_format());  // the incoming gradient's layout
}

at::Tensor roi_align_backward_boxes_cuda(const at::Tensor& grad_, const at::Tensor& input_, const at::Tensor& rois_,
                                         double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                         int64_t sampling_ratio, bool aligned) {
  check_roi_align(input_, "input", rois_, pooled_height, pooled_width, c10::DeviceType::CUDA);
  check_same(grad_, input_, "grad", "input");
  check_grad(grad_, rois_.size(0), input_.size(1), pooled_height, pooled_width);
  const c10::cuda::CUDAGuard guard(input_.device());
  const at::Tensor input = input_.contiguous();
  const at::Tensor rois = rois_.contiguous();
  const at::Tensor grad = grad_.contiguous();
  const RoiShape s{input.size(0), input.size(1), input.size(2), input.size(3), rois.size(0),
                   pooled_height, pooled_width, sampling_ratio, aligned};
  at::Tensor grad_rois = at::zeros({s.K, 5}, rois.options());
  if (s.K == 0) return grad_rois;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_backward_boxes_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    roi_boxes_grad_kernel<scalar_t, T><<<static_cast<unsigned int>(s.K), kThreads, 0,
                                         at::cuda::getCurrentCUDAStream()>>>(
        s, spatial_scale, grad.const_data_ptr<scalar_t>(), input.const_data_ptr<scalar_t>(),
        rois.const_data_ptr<scalar_t>(), grad_rois.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_rois;
}

}  // namespace

TORCH_LIBRARY_IMPL(impls, CUDA, m) {
  m.impl("roi_align_forward", TORCH_FN(roi_align_forward_cuda));
  m.impl("roi_align_backward_input", TORCH_FN(roi_align_backward_input_cuda));
  m.impl("roi_align_backward_boxes", TORCH_FN(roi_align_backward_boxes_cuda));
}

}  // namespace impls
