// roi_align on CUDA: the same sampling math as the CPU kernels (csrc/bilinear.h).
//
// Forward: one thread per output element (k, c, ph, pw), looping over the bin's samples; the per-box geometry
// is a few flops and is recomputed per thread rather than staged through memory.
// Input gradient: by default one thread per incoming gradient element, atomically adding each sample's four
// taps into grad_input with at::native::fastAtomicAdd (see the kernel). With
// torch.use_deterministic_algorithms(True): the atomic-free "pull" of cuda_common.cuh; the adaptive grid makes
// the number of taps per box data-dependent, so this path reads its total back to the host (one sync).
// Box gradient: one block per box, a fixed partition of (channel, cell) over its threads and a fixed tree
// reduction: deterministic.
// Invalid input that slipped past the Python checks (a batch column outside [0, N), a non-finite box with
// adaptive sampling) cannot raise here without a device sync; such a box reads nothing: its output is NaN and
// it contributes no gradient.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/native/cuda/KernelUtils.cuh>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>

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

template <typename T>
struct RoiBoxGeo {
  bool ok;  // the box may be read: batch index in range, finite with adaptive sampling, non-empty map
  int64_t n;
  RoiGeometry<T> g;
};

template <typename scalar_t, typename T>
__device__ __forceinline__ RoiBoxGeo<T> roi_box(const scalar_t* rois, const RoiShape& s, T spatial_scale,
                                                int64_t k) {
  RoiBoxGeo<T> r{};
  const scalar_t* roi = rois + k * 5;
  const T b = static_cast<T>(roi[0]);
  const T x1 = static_cast<T>(roi[1]), y1 = static_cast<T>(roi[2]);
  const T x2 = static_cast<T>(roi[3]), y2 = static_cast<T>(roi[4]);
  r.ok = roi_batch_valid(b, s.N) && s.H > 0 && s.W > 0 &&
         (s.sampling_ratio > 0 || (isfinite(x1) && isfinite(y1) && isfinite(x2) && isfinite(y2)));
  if (!r.ok) return r;
  r.n = static_cast<int64_t>(b);
  r.g = roi_geometry<T>(x1, y1, x2, y2, spatial_scale, s.PH, s.PW, s.sampling_ratio, s.aligned);
  return r;
}

// One in-range sample: its corners and weights.
template <typename T>
struct RoiTap {
  bool valid;
  RoiCorner<T> y, x;
  T hy, hx;
};

template <typename T>
__device__ __forceinline__ RoiTap<T> roi_tap(const RoiShape& s, const RoiGeometry<T>& g, int64_t ph, int64_t pw,
                                             int64_t iy, int64_t ix) {
  RoiTap<T> t{};
  const T y = roi_sample(g.y_start, ph, g.bin_h, iy, g.grid_h);
  const T x = roi_sample(g.x_start, pw, g.bin_w, ix, g.grid_w);
  t.valid = roi_in_range(y, s.H) && roi_in_range(x, s.W);
  if (!t.valid) return t;
  t.y = roi_corner(y, s.H);
  t.x = roi_corner(x, s.W);
  t.hy = static_cast<T>(1) - t.y.frac;
  t.hx = static_cast<T>(1) - t.x.frac;
  return t;
}

template <typename scalar_t, typename T>
__global__ void roi_forward_kernel(RoiShape s, T spatial_scale, const scalar_t* __restrict__ input,
                                   const scalar_t* __restrict__ rois, scalar_t* __restrict__ out) {
  const int64_t total = s.K * s.C * s.cells();
  IMPLS_GRID_STRIDE(i, total) {
    const int64_t pw = i % s.PW, ph = (i / s.PW) % s.PH;
    const int64_t c = (i / s.cells()) % s.C, k = i / (s.cells() * s.C);
    const RoiBoxGeo<T> box = roi_box<scalar_t, T>(rois, s, spatial_scale, k);
    if (!box.ok) {
      out[i] = static_cast<scalar_t>(std::numeric_limits<T>::quiet_NaN());
      continue;
    }
    const RoiGeometry<T>& g = box.g;
    const scalar_t* plane = input + (box.n * s.C + c) * s.H * s.W;
    T acc = 0;
    for (int64_t iy = 0; iy < g.grid_h; ++iy) {
      for (int64_t ix = 0; ix < g.grid_w; ++ix) {
        const RoiTap<T> t = roi_tap(s, g, ph, pw, iy, ix);
        if (!t.valid) continue;
        const T w1 = t.hy * t.hx, w2 = t.hy * t.x.frac, w3 = t.y.frac * t.hx, w4 = t.y.frac * t.x.frac;
        acc += w1 * static_cast<T>(plane[t.y.low * s.W + t.x.low]) +
               w2 * static_cast<T>(plane[t.y.low * s.W + t.x.high]) +
               w3 * static_cast<T>(plane[t.y.high * s.W + t.x.low]) +
               w4 * static_cast<T>(plane[t.y.high * s.W + t.x.high]);
      }
    }
    out[i] = static_cast<scalar_t>(acc / static_cast<T>(g.count));
  }
}

// Atomic input gradient: one thread per grad element. Each tap's share is computed in T (float for half types)
// and added with at::native::fastAtomicAdd: a native atomicAdd for float/double; for half/bfloat16 a paired
// half2/bfloat162 atomic on the aligned pair holding the element (native on sm_80+) instead of a 32-bit CAS
// loop. grad_input stays in the input's dtype: no float32 buffer (2x the bytes) and no cast pass afterwards.
// Each element then rounds once per add in its own dtype, as torchvision's half backward does; the
// deterministic path below sums in T and rounds once.
template <typename scalar_t, typename T>
__global__ void roi_input_grad_atomic_kernel(RoiShape s, T spatial_scale, const scalar_t* __restrict__ grad,
                                             const scalar_t* __restrict__ rois, scalar_t* __restrict__ grad_input) {
  const int64_t total = s.K * s.C * s.cells();
  const int64_t numel = s.N * s.C * s.H * s.W;
  IMPLS_GRID_STRIDE(i, total) {
    const int64_t pw = i % s.PW, ph = (i / s.PW) % s.PH;
    const int64_t c = (i / s.cells()) % s.C, k = i / (s.cells() * s.C);
    const RoiBoxGeo<T> box = roi_box<scalar_t, T>(rois, s, spatial_scale, k);
    if (!box.ok) continue;
    const RoiGeometry<T>& g = box.g;
    const T count = static_cast<T>(g.count);
    const int64_t plane = (box.n * s.C + c) * s.H * s.W;
    const auto add = [&](int64_t y, int64_t x, T v) {
      at::native::fastAtomicAdd(grad_input, plane + y * s.W + x, numel, static_cast<scalar_t>(v), true);
    };
    const T gv = static_cast<T>(grad[i]);
    for (int64_t iy = 0; iy < g.grid_h; ++iy) {
      for (int64_t ix = 0; ix < g.grid_w; ++ix) {
        const RoiTap<T> t = roi_tap(s, g, ph, pw, iy, ix);
        if (!t.valid) continue;
        add(t.y.low, t.x.low, gv * (t.hy * t.hx) / count);
        add(t.y.low, t.x.high, gv * (t.hy * t.x.frac) / count);
        add(t.y.high, t.x.low, gv * (t.y.frac * t.hx) / count);
        add(t.y.high, t.x.high, gv * (t.y.frac * t.x.frac) / count);
      }
    }
  }
}

// Deterministic input gradient, step 1a: samples per box (0 for a box that may not be read).
template <typename scalar_t, typename T>
__global__ void roi_sample_counts_kernel(RoiShape s, T spatial_scale, const scalar_t* __restrict__ rois,
                                         int64_t* __restrict__ samples) {
  IMPLS_GRID_STRIDE(k, s.K) {
    const RoiBoxGeo<T> box = roi_box<scalar_t, T>(rois, s, spatial_scale, k);
    const int64_t gh = box.g.grid_h > 0 ? box.g.grid_h : 0, gw = box.g.grid_w > 0 ? box.g.grid_w : 0;
    samples[k] = box.ok ? s.cells() * gh * gw : 0;
  }
}

// Step 1b: the four taps of every sample, in the reference's order (box, ph, pw, iy, ix, corner).
// Contribution of an entry: (g * a) / b = (g * (hy * hx)) / count etc.
template <typename scalar_t, typename T>
__global__ void roi_taps_kernel(RoiShape s, T spatial_scale, const scalar_t* __restrict__ rois,
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
    const RoiBoxGeo<T> box = roi_box<scalar_t, T>(rois, s, spatial_scale, k);
    const RoiGeometry<T>& g = box.g;  // box.ok: boxes that may not be read have no samples
    const int64_t ix = local % g.grid_w, iy = (local / g.grid_w) % g.grid_h;
    const int64_t cell_in_box = local / (g.grid_w * g.grid_h);
    const int64_t pw = cell_in_box % s.PW, ph = cell_in_box / s.PW;
    const RoiTap<T> t = roi_tap(s, g, ph, pw, iy, ix);
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
      a[e] = (high_y ? t.y.frac : t.hy) * (high_x ? t.x.frac : t.hx);
    }
  }
}

template <typename T>
struct RoiCombine {
  __device__ __forceinline__ T operator()(T g, T a, T b) const { return g * a / b; }
};

// Box gradient: one block per box; rois[:, 0] gets none.
template <typename scalar_t, typename T>
__global__ void roi_rois_grad_kernel(RoiShape s, T spatial_scale, const scalar_t* __restrict__ grad,
                                     const scalar_t* __restrict__ input, const scalar_t* __restrict__ rois,
                                     scalar_t* __restrict__ grad_rois) {
  __shared__ T shared[4 * kThreads];
  const int64_t k = blockIdx.x;
  T sums[4] = {0, 0, 0, 0};  // d x1, d y1, d x2, d y2
  const RoiBoxGeo<T> box = roi_box<scalar_t, T>(rois, s, spatial_scale, k);
  const int64_t items = box.ok ? s.C * s.cells() : 0;
  const RoiGeometry<T>& g = box.g;
  const T count = static_cast<T>(g.count);
  for (int64_t t = threadIdx.x; t < items; t += blockDim.x) {
    const int64_t c = t / s.cells(), cell = t % s.cells();
    const int64_t ph = cell / s.PW, pw = cell % s.PW;
    const scalar_t* plane = input + (box.n * s.C + c) * s.H * s.W;
    const T gv = static_cast<T>(grad[k * s.C * s.cells() + t]);
    for (int64_t iy = 0; iy < g.grid_h; ++iy) {
      for (int64_t ix = 0; ix < g.grid_w; ++ix) {
        const RoiTap<T> tap = roi_tap(s, g, ph, pw, iy, ix);
        if (!tap.valid) continue;
        const T v1 = static_cast<T>(plane[tap.y.low * s.W + tap.x.low]);
        const T v2 = static_cast<T>(plane[tap.y.low * s.W + tap.x.high]);
        const T v3 = static_cast<T>(plane[tap.y.high * s.W + tap.x.low]);
        const T v4 = static_cast<T>(plane[tap.y.high * s.W + tap.x.high]);
        if (tap.y.moves) {
          const T gy = gv * (tap.hx * (v3 - v1) + tap.x.frac * (v4 - v2)) / count;
          const T ay = roi_position<T>(ph, iy, g.grid_h, s.PH, g.h_clamped);
          sums[1] += gy * (spatial_scale * (static_cast<T>(1) - ay));
          sums[3] += gy * (spatial_scale * ay);
        }
        if (tap.x.moves) {
          const T gx = gv * (tap.hy * (v2 - v1) + tap.y.frac * (v4 - v3)) / count;
          const T ax = roi_position<T>(pw, ix, g.grid_w, s.PW, g.w_clamped);
          sums[0] += gx * (spatial_scale * (static_cast<T>(1) - ax));
          sums[2] += gx * (spatial_scale * ax);
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
  check_roi_align(input_, rois_, pooled_height, pooled_width, c10::DeviceType::CUDA);
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
        s, static_cast<T>(spatial_scale), input.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(),
        out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> roi_align_backward_cuda(const at::Tensor& grad_, const at::Tensor& input_,
                                                           const at::Tensor& rois_, double spatial_scale,
                                                           int64_t pooled_height, int64_t pooled_width,
                                                           int64_t sampling_ratio, bool aligned, bool input_grad,
                                                           bool rois_grad) {
  check_roi_align(input_, rois_, pooled_height, pooled_width, c10::DeviceType::CUDA);
  check_grad(grad_, input_, rois_.size(0), pooled_height, pooled_width);
  const c10::cuda::CUDAGuard guard(input_.device());
  const at::Tensor input = input_.contiguous();
  const at::Tensor rois = rois_.contiguous();
  const at::Tensor grad = grad_.contiguous();
  const RoiShape s{input.size(0), input.size(1), input.size(2), input.size(3), rois.size(0),
                   pooled_height, pooled_width, sampling_ratio, aligned};
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  const auto stream = at::cuda::getCurrentCUDAStream();
  at::Tensor grad_input = at::empty({0}, input.options());
  at::Tensor grad_rois = rois_grad ? at::zeros({s.K, 5}, rois.options()) : at::empty({0}, rois.options());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_backward_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const T scale = static_cast<T>(spatial_scale);
    const scalar_t* r = rois.const_data_ptr<scalar_t>();
    const auto acc_options = input.options().dtype(c10::CppTypeToScalarType<T>::value);
    if (input_grad && deterministic) {
      grad_input = at::empty({s.N, s.C, s.H, s.W}, input.options());
      const auto index_options = input.options().dtype(at::kLong);
      int64_t total_samples = 0;
      at::Tensor cum;
      if (s.K > 0) {
        at::Tensor samples = at::empty({s.K}, index_options);
        roi_sample_counts_kernel<scalar_t, T><<<blocks_for(s.K), kThreads, 0, stream>>>(
            s, scale, r, samples.mutable_data_ptr<int64_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        cum = at::cumsum(samples, 0);
        total_samples = cum[s.K - 1].item<int64_t>();  // the one host sync: the entry count
      }
      TapEntries e{at::empty({total_samples * 4}, index_options), at::empty({total_samples * 4}, index_options),
                   at::empty({total_samples * 4}, acc_options), at::empty({total_samples * 4}, acc_options)};
      if (total_samples > 0) {
        roi_taps_kernel<scalar_t, T><<<blocks_for(total_samples), kThreads, 0, stream>>>(
            s, scale, r, cum.const_data_ptr<int64_t>(), total_samples, e.pixel.mutable_data_ptr<int64_t>(),
            e.cell.mutable_data_ptr<int64_t>(), e.a.mutable_data_ptr<T>(), e.b.mutable_data_ptr<T>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      gather_taps<scalar_t, T>(e, grad, grad_input, s.cells(), RoiCombine<T>{});
    } else if (input_grad) {
      grad_input = at::zeros({s.N, s.C, s.H, s.W}, input.options());
      if (grad.numel() > 0) {
        roi_input_grad_atomic_kernel<scalar_t, T><<<blocks_for(grad.numel()), kThreads, 0, stream>>>(
            s, scale, grad.const_data_ptr<scalar_t>(), r, grad_input.mutable_data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
    if (rois_grad && s.K > 0) {
      roi_rois_grad_kernel<scalar_t, T><<<static_cast<unsigned int>(s.K), kThreads, 0, stream>>>(
          s, scale, grad.const_data_ptr<scalar_t>(), input.const_data_ptr<scalar_t>(), r,
          grad_rois.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {grad_input, grad_rois};
}

}  // namespace

TORCH_LIBRARY_IMPL(impls, CUDA, m) {
  m.impl("roi_align_forward", TORCH_FN(roi_align_forward_cuda));
  m.impl("roi_align_backward", TORCH_FN(roi_align_backward_cuda));
}

}  // namespace impls
