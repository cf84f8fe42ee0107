// roi_align on CUDA: the same sampling math as the CPU kernels (csrc/common/bilinear.h), in the same precision.
// Multi-level (FPN) pooling is the same kernels over a pyramid: each box reads its level (from the `levels`
// tensor, on the device) and that level's map, size and scale; roi_align is the one-level case (no levels
// tensor, every box on level 0). The pyramid, at most kMaxLevels (8) maps, reaches the kernels as a small
// struct of pointers, sizes and scales passed by value: each map is read in place, one launch per pass.
//
// Geometry in double: a box's start, bin size and every sample position are computed in double for every dtype,
// as the CPU kernel and impls/backends/reference.py do; only the interpolation weights are then rounded to T (float for
// half/bfloat16/float32). A sample that lands exactly on a pixel row (common with integer or half-precision
// boxes) stays there, instead of falling to 27.999998 in float and taking the other row pair's slope in the box
// gradient.
// Forward: one thread per output element (k, c, ph, pw), looping over the bin's samples; the per-box geometry
// is a few flops and is recomputed per thread rather than staged through memory.
// Input gradient: by default one thread per incoming gradient element, atomically adding each sample's four
// taps into its level's gradient of T (half types accumulate in float and are rounded once at the end, as on
// the CPU). With torch.use_deterministic_algorithms(True): the atomic-free "pull" of cuda_common.cuh over every
// level at once; with a fixed sampling_ratio the number of taps is known on the host (every box gets its
// K-th share of the list, an unreadable box's taps empty), while the adaptive grid makes it data-dependent, so
// that path reads its total back to the host (one sync).
// Box gradient: one block per box, a fixed partition of (channel, cell) over its threads and a fixed tree
// reduction: deterministic.
// Invalid input that slipped past the Python checks (a batch column outside [0, N), a level outside the
// pyramid, a non-finite box with adaptive sampling) cannot raise here without a device sync; such a box reads
// nothing: its output is NaN and it contributes no gradient. An empty map (H or W = 0) has no in-range sample:
// outputs are 0, as on the CPU.
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
#include <vector>

#include "common/bilinear.h"
#include "common/checks.h"
#include "common/cuda_common.cuh"

namespace impls {
namespace {

struct RoiShape {
  int64_t N, C, K, PH, PW, sampling_ratio;
  bool aligned;
  __host__ __device__ int64_t cells() const { return PH * PW; }
};

// The pyramid as the kernels see it, by value: level l's data (its map, or its gradient), size and scale.
template <typename P>
struct Pyramid {
  P data[kMaxLevels];
  int64_t H[kMaxLevels];
  int64_t W[kMaxLevels];
  double scale[kMaxLevels];
  int64_t count;
};

struct RoiBox {
  bool ok;  // the box may be read: a level of the pyramid, batch index in [0, N) and, adaptive, a finite box
  int64_t n;
  int64_t level;
  int64_t H, W;  // its level's map size
  double scale;  // its level's spatial_scale
  RoiGeometry<double> g;
};

// Box k of rois; levels is nullptr for roi_align (level 0).
template <typename scalar_t, typename P>
__device__ __forceinline__ RoiBox roi_box(const scalar_t* rois, const int64_t* levels, const RoiShape& s,
                                          const Pyramid<P>& pyramid, int64_t k) {
  RoiBox r{};
  const scalar_t* roi = rois + k * 5;
  const int64_t level = levels == nullptr ? 0 : levels[k];
  const double b = static_cast<double>(roi[0]);
  const double x1 = static_cast<double>(roi[1]), y1 = static_cast<double>(roi[2]);
  const double x2 = static_cast<double>(roi[3]), y2 = static_cast<double>(roi[4]);
  r.ok = level >= 0 && level < pyramid.count && roi_batch_valid(b, s.N) &&
         (s.sampling_ratio > 0 || (isfinite(x1) && isfinite(y1) && isfinite(x2) && isfinite(y2)));
  if (!r.ok) return r;
  r.n = static_cast<int64_t>(b);
  r.level = level;
  r.H = pyramid.H[level];
  r.W = pyramid.W[level];
  r.scale = pyramid.scale[level];
  r.g = roi_geometry<double>(x1, y1, x2, y2, r.scale, s.PH, s.PW, s.sampling_ratio, s.aligned);
  return r;
}

// One sample (iy, ix) of bin (ph, pw): its corners, its weights in T, and for the box gradient the derivative of
// each coordinate with respect to the box start and end (spatial_scale * (1 - position), spatial_scale * position).
// The same values as RoiAxis in csrc/roi_align/roi_align_cpu.cpp.
template <typename T>
struct RoiTap {
  bool valid;  // inside [-1, size] on both axes and the map is not empty
  RoiCorner<double> y, x;
  T ly, hy, lx, hx;
  T y_scale_lo, y_scale_hi, x_scale_lo, x_scale_hi;
};

template <typename T>
__device__ __forceinline__ RoiTap<T> roi_tap(const RoiShape& s, const RoiBox& box, int64_t ph, int64_t pw,
                                             int64_t iy, int64_t ix) {
  RoiTap<T> t{};
  const RoiGeometry<double>& g = box.g;
  const double y = roi_sample(g.y_start, ph, g.bin_h, iy, g.grid_h);
  const double x = roi_sample(g.x_start, pw, g.bin_w, ix, g.grid_w);
  t.valid = roi_in_range(y, box.H) && roi_in_range(x, box.W) && box.H > 0 && box.W > 0;
  if (!t.valid) return t;
  t.y = roi_corner(y, box.H);
  t.x = roi_corner(x, box.W);
  t.ly = static_cast<T>(t.y.frac);
  t.hy = static_cast<T>(1.0 - t.y.frac);
  t.lx = static_cast<T>(t.x.frac);
  t.hx = static_cast<T>(1.0 - t.x.frac);
  const double ay = roi_position<double>(ph, iy, g.grid_h, s.PH, g.h_clamped);
  const double ax = roi_position<double>(pw, ix, g.grid_w, s.PW, g.w_clamped);
  t.y_scale_lo = static_cast<T>(box.scale * (1.0 - ay));
  t.y_scale_hi = static_cast<T>(box.scale * ay);
  t.x_scale_lo = static_cast<T>(box.scale * (1.0 - ax));
  t.x_scale_hi = static_cast<T>(box.scale * ax);
  return t;
}

template <typename scalar_t, typename T>
__global__ void roi_forward_kernel(RoiShape s, Pyramid<const scalar_t*> maps, const scalar_t* __restrict__ rois,
                                   const int64_t* __restrict__ levels, scalar_t* __restrict__ out) {
  const int64_t total = s.K * s.C * s.cells();
  IMPLS_GRID_STRIDE(i, total) {
    const int64_t pw = i % s.PW, ph = (i / s.PW) % s.PH;
    const int64_t c = (i / s.cells()) % s.C, k = i / (s.cells() * s.C);
    const RoiBox box = roi_box(rois, levels, s, maps, k);
    if (!box.ok) {
      out[i] = static_cast<scalar_t>(std::numeric_limits<T>::quiet_NaN());
      continue;
    }
    const RoiGeometry<double>& g = box.g;
    const scalar_t* plane = maps.data[box.level] + (box.n * s.C + c) * box.H * box.W;
    T acc = 0;
    for (int64_t iy = 0; iy < g.grid_h; ++iy) {
      for (int64_t ix = 0; ix < g.grid_w; ++ix) {
        const RoiTap<T> t = roi_tap<T>(s, box, ph, pw, iy, ix);
        if (!t.valid) continue;
        const T w1 = t.hy * t.hx, w2 = t.hy * t.lx, w3 = t.ly * t.hx, w4 = t.ly * t.lx;
        acc += w1 * static_cast<T>(plane[t.y.low * box.W + t.x.low]) +
               w2 * static_cast<T>(plane[t.y.low * box.W + t.x.high]) +
               w3 * static_cast<T>(plane[t.y.high * box.W + t.x.low]) +
               w4 * static_cast<T>(plane[t.y.high * box.W + t.x.high]);
      }
    }
    out[i] = static_cast<scalar_t>(acc / static_cast<T>(g.count));
  }
}

// Atomic input gradient: one thread per grad element, adding (g * w) / count for each of a sample's four taps
// into its level's gradient, a tensor of T (native float/double atomics).
template <typename scalar_t, typename T>
__global__ void roi_input_grad_atomic_kernel(RoiShape s, Pyramid<T*> grads, const scalar_t* __restrict__ grad,
                                             const scalar_t* __restrict__ rois, const int64_t* __restrict__ levels) {
  const int64_t total = s.K * s.C * s.cells();
  IMPLS_GRID_STRIDE(i, total) {
    const int64_t pw = i % s.PW, ph = (i / s.PW) % s.PH;
    const int64_t c = (i / s.cells()) % s.C, k = i / (s.cells() * s.C);
    const RoiBox box = roi_box(rois, levels, s, grads, k);
    if (!box.ok) continue;
    const RoiGeometry<double>& g = box.g;
    const T count = static_cast<T>(g.count);
    T* plane = grads.data[box.level] + (box.n * s.C + c) * box.H * box.W;
    const T gv = static_cast<T>(grad[i]);
    for (int64_t iy = 0; iy < g.grid_h; ++iy) {
      for (int64_t ix = 0; ix < g.grid_w; ++ix) {
        const RoiTap<T> t = roi_tap<T>(s, box, ph, pw, iy, ix);
        if (!t.valid) continue;
        gpuAtomicAddNoReturn(plane + t.y.low * box.W + t.x.low, gv * (t.hy * t.hx) / count);
        gpuAtomicAddNoReturn(plane + t.y.low * box.W + t.x.high, gv * (t.hy * t.lx) / count);
        gpuAtomicAddNoReturn(plane + t.y.high * box.W + t.x.low, gv * (t.ly * t.hx) / count);
        gpuAtomicAddNoReturn(plane + t.y.high * box.W + t.x.high, gv * (t.ly * t.lx) / count);
      }
    }
  }
}

// Deterministic input gradient, step 1a: samples per box. With a fixed sampling_ratio every box gets
// cells * ratio^2 (a box that may not be read too: its taps are empty), so the total is known on the host;
// adaptive, a box that may not be read gets 0.
template <typename scalar_t, typename P>
__global__ void roi_sample_counts_kernel(RoiShape s, Pyramid<P> pyramid, const scalar_t* __restrict__ rois,
                                         const int64_t* __restrict__ levels, int64_t* __restrict__ samples) {
  IMPLS_GRID_STRIDE(k, s.K) {
    if (s.sampling_ratio > 0) {
      samples[k] = s.cells() * s.sampling_ratio * s.sampling_ratio;
      continue;
    }
    const RoiBox box = roi_box(rois, levels, s, pyramid, k);
    const int64_t gh = box.g.grid_h > 0 ? box.g.grid_h : 0, gw = box.g.grid_w > 0 ? box.g.grid_w : 0;
    samples[k] = box.ok ? s.cells() * gh * gw : 0;
  }
}

// Step 1b: the four taps of every sample, in the reference's order (box, ph, pw, iy, ix, corner), pixels
// numbered across the levels as GatherTargets (cuda_common.cuh) reads them.
// Contribution of an entry: (g * a) / b = (g * (hy * hx)) / count etc.
template <typename scalar_t, typename T, typename P>
__global__ void roi_taps_kernel(RoiShape s, Pyramid<P> pyramid, const scalar_t* __restrict__ rois,
                                const int64_t* __restrict__ levels, const int64_t* __restrict__ cum_samples,
                                int64_t total_samples, int64_t* __restrict__ pixel, int64_t* __restrict__ cell,
                                T* __restrict__ a, T* __restrict__ b) {
  IMPLS_GRID_STRIDE(i, total_samples) {
    // The box of sample i: the first k with cum_samples[k] > i.
    int64_t lo = 0, hi = s.K - 1;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (cum_samples[mid] > i) hi = mid; else lo = mid + 1;
    }
    const int64_t k = lo;
    const int64_t local = i - (k > 0 ? cum_samples[k - 1] : 0);
    const RoiBox box = roi_box(rois, levels, s, pyramid, k);
    // Adaptive, only boxes that may be read have samples; a fixed grid is the same for every box.
    const int64_t gh = box.ok ? box.g.grid_h : s.sampling_ratio, gw = box.ok ? box.g.grid_w : s.sampling_ratio;
    const int64_t ix = local % gw, iy = (local / gw) % gh;
    const int64_t cell_in_box = local / (gw * gh);
    const int64_t pw = cell_in_box % s.PW, ph = cell_in_box / s.PW;
    const RoiTap<T> t = box.ok ? roi_tap<T>(s, box, ph, pw, iy, ix) : RoiTap<T>{};
    int64_t base = 0;  // pixel n * H * W of the box's level, after the levels before it
    for (int64_t l = 0; l < box.level; ++l) base += s.N * pyramid.H[l] * pyramid.W[l];
    base += box.n * box.H * box.W;
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
      pixel[e] = base + (high_y ? t.y.high : t.y.low) * box.W + (high_x ? t.x.high : t.x.low);
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
__global__ void roi_boxes_grad_kernel(RoiShape s, Pyramid<const scalar_t*> maps, const scalar_t* __restrict__ grad,
                                      const scalar_t* __restrict__ rois, const int64_t* __restrict__ levels,
                                      scalar_t* __restrict__ grad_rois) {
  __shared__ T shared[4 * kThreads];
  const int64_t k = blockIdx.x;
  T sums[4] = {0, 0, 0, 0};  // d x1, d y1, d x2, d y2
  const RoiBox box = roi_box(rois, levels, s, maps, k);
  const int64_t items = box.ok ? s.C * s.cells() : 0;
  const RoiGeometry<double>& g = box.g;
  const T count = static_cast<T>(g.count);
  for (int64_t item = threadIdx.x; item < items; item += blockDim.x) {
    const int64_t c = item / s.cells(), cell = item % s.cells();
    const int64_t ph = cell / s.PW, pw = cell % s.PW;
    const scalar_t* plane = maps.data[box.level] + (box.n * s.C + c) * box.H * box.W;
    const T gv = static_cast<T>(grad[k * s.C * s.cells() + item]);
    for (int64_t iy = 0; iy < g.grid_h; ++iy) {
      for (int64_t ix = 0; ix < g.grid_w; ++ix) {
        const RoiTap<T> t = roi_tap<T>(s, box, ph, pw, iy, ix);
        if (!t.valid) continue;
        const T v1 = static_cast<T>(plane[t.y.low * box.W + t.x.low]);
        const T v2 = static_cast<T>(plane[t.y.low * box.W + t.x.high]);
        const T v3 = static_cast<T>(plane[t.y.high * box.W + t.x.low]);
        const T v4 = static_cast<T>(plane[t.y.high * box.W + t.x.high]);
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

// ------------------------------------------------------------------------------------------------ host side

// The pyramid's sizes and scales, checked: 1 to kMaxLevels levels, one scale per level.
Pyramid<const void*> pyramid_sizes(at::IntArrayRef heights, at::IntArrayRef widths, at::ArrayRef<double> scales) {
  TORCH_CHECK(!scales.empty() && scales.size() <= static_cast<size_t>(kMaxLevels), "features: the CUDA kernels ",
              "pool 1 to ", kMaxLevels, " pyramid levels in one launch, got ", scales.size());
  TORCH_CHECK(heights.size() == scales.size() && widths.size() == scales.size(), "heights, widths and scales ",
              "must give one entry per map, got ", heights.size(), ", ", widths.size(), " and ", scales.size());
  Pyramid<const void*> p{};
  p.count = static_cast<int64_t>(scales.size());
  for (int64_t l = 0; l < p.count; ++l) {
    p.H[l] = heights[l];
    p.W[l] = widths[l];
    p.scale[l] = scales[l];
  }
  return p;
}

// The same sizes and scales over other data: level l's entry of `data`.
template <typename P>
Pyramid<P> with_data(const Pyramid<const void*>& sizes, const std::vector<P>& data) {
  Pyramid<P> p{};
  p.count = sizes.count;
  for (int64_t l = 0; l < sizes.count; ++l) {
    p.data[l] = data[l];
    p.H[l] = sizes.H[l];
    p.W[l] = sizes.W[l];
    p.scale[l] = sizes.scale[l];
  }
  return p;
}

// The maps, checked (CUDA, floating point, [N, C, H, W] with features[0]'s N, C, dtype and device) and made NCHW:
// a channels_last or strided map is copied once (one pass over N*C*H*W); an NCHW map is read in place.
std::vector<at::Tensor> contiguous_maps(at::TensorList features, const at::Tensor& rois, int64_t pooled_height,
                                        int64_t pooled_width) {
  TORCH_CHECK(!features.empty(), "features must hold at least one map");
  std::vector<at::Tensor> maps;
  for (const at::Tensor& f : features) {
    check_roi_align(f, "features[l]", rois, pooled_height, pooled_width, c10::DeviceType::CUDA);
    check_same(f, features[0], "features[l]", "features[0]");
    TORCH_CHECK(f.size(0) == features[0].size(0) && f.size(1) == features[0].size(1), "features[",
                maps.size(), "] must have the N and C of features[0]: ", f.sizes(), " vs ", features[0].sizes());
    maps.push_back(f.contiguous());
  }
  return maps;
}

// Each map's size along dim, e.g. 2: the heights.
std::vector<int64_t> sizes_of(const std::vector<at::Tensor>& maps, int dim) {
  std::vector<int64_t> sizes;
  for (const at::Tensor& m : maps) sizes.push_back(m.size(dim));
  return sizes;
}

// Each pass over a pyramid; levels undefined: roi_align's one map.

at::Tensor pyramid_forward(at::TensorList features, const at::Tensor& rois_, const at::Tensor& levels_,
                           at::ArrayRef<double> scales, int64_t pooled_height, int64_t pooled_width,
                           int64_t sampling_ratio, bool aligned) {
  const std::vector<at::Tensor> maps = contiguous_maps(features, rois_, pooled_height, pooled_width);
  const Pyramid<const void*> sizes = pyramid_sizes(sizes_of(maps, 2), sizes_of(maps, 3), scales);
  const c10::cuda::CUDAGuard guard(maps[0].device());
  const at::Tensor rois = rois_.contiguous();
  const at::Tensor levels = levels_of(levels_, rois);
  const RoiShape s{maps[0].size(0), maps[0].size(1), rois.size(0), pooled_height, pooled_width, sampling_ratio,
                   aligned};
  at::Tensor out = at::empty({s.K, s.C, s.PH, s.PW}, maps[0].options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "roi_align_forward_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    std::vector<const scalar_t*> data;
    for (const at::Tensor& m : maps) data.push_back(m.const_data_ptr<scalar_t>());
    roi_forward_kernel<scalar_t, T><<<blocks_for(out.numel()), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        s, with_data(sizes, data), rois.const_data_ptr<scalar_t>(), levels_ptr(levels),
        out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // The kernels index NCHW; a channels_last caller gets a channels_last output (one copy of the output).
  return out.contiguous(features[0].suggest_memory_format());
}

std::vector<at::Tensor> pyramid_backward_input(const at::Tensor& grad_, const at::Tensor& rois_,
                                               const at::Tensor& levels_, at::ArrayRef<double> scales,
                                               int64_t pooled_height, int64_t pooled_width, int64_t N, int64_t C,
                                               at::IntArrayRef heights, at::IntArrayRef widths,
                                               int64_t sampling_ratio, bool aligned) {
  check_roi_align(grad_, "grad", rois_, pooled_height, pooled_width, c10::DeviceType::CUDA);
  check_grad(grad_, rois_.size(0), C, pooled_height, pooled_width);
  const Pyramid<const void*> sizes = pyramid_sizes(heights, widths, scales);
  for (int64_t l = 0; l < sizes.count; ++l) check_input_sizes(N, C, sizes.H[l], sizes.W[l]);
  const c10::cuda::CUDAGuard guard(grad_.device());
  const at::Tensor rois = rois_.contiguous();
  const at::Tensor levels = levels_of(levels_, rois);
  const at::Tensor grad = grad_.contiguous();
  const RoiShape s{N, C, rois.size(0), pooled_height, pooled_width, sampling_ratio, aligned};
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  const auto stream = at::cuda::getCurrentCUDAStream();
  std::vector<at::Tensor> grad_inputs;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_backward_input_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const scalar_t* r = rois.const_data_ptr<scalar_t>();
    const int64_t* lv = levels_ptr(levels);
    const auto acc_options = grad.options().dtype(c10::CppTypeToScalarType<T>::value);
    if (deterministic) {
      for (int64_t l = 0; l < sizes.count; ++l) {
        grad_inputs.push_back(at::empty({N, C, sizes.H[l], sizes.W[l]}, grad.options()));
      }
      const auto index_options = grad.options().dtype(at::kLong);
      int64_t total_samples = 0;
      at::Tensor cum;
      if (s.K > 0) {
        at::Tensor samples = at::empty({s.K}, index_options);
        roi_sample_counts_kernel<scalar_t><<<blocks_for(s.K), kThreads, 0, stream>>>(
            s, sizes, r, lv, samples.mutable_data_ptr<int64_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        cum = at::cumsum(samples, 0);
        // Adaptive: the one host sync, the entry count.
        total_samples = s.sampling_ratio > 0 ? s.K * s.cells() * s.sampling_ratio * s.sampling_ratio
                                             : cum[s.K - 1].item<int64_t>();
      }
      TapEntries e{at::empty({total_samples * 4}, index_options), at::empty({total_samples * 4}, index_options),
                   at::empty({total_samples * 4}, acc_options), at::empty({total_samples * 4}, acc_options)};
      if (total_samples > 0) {
        roi_taps_kernel<scalar_t, T><<<blocks_for(total_samples), kThreads, 0, stream>>>(
            s, sizes, r, lv, cum.const_data_ptr<int64_t>(), total_samples, e.pixel.mutable_data_ptr<int64_t>(),
            e.cell.mutable_data_ptr<int64_t>(), e.a.mutable_data_ptr<T>(), e.b.mutable_data_ptr<T>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      gather_taps<scalar_t, T>(e, grad, grad_inputs, s.cells(), RoiCombine<T>{});
      return;
    }
    std::vector<at::Tensor> accs;
    std::vector<T*> data;
    for (int64_t l = 0; l < sizes.count; ++l) {
      accs.push_back(at::zeros({N, C, sizes.H[l], sizes.W[l]}, acc_options));
      data.push_back(accs.back().mutable_data_ptr<T>());
    }
    if (grad.numel() > 0) {
      roi_input_grad_atomic_kernel<scalar_t, T><<<blocks_for(grad.numel()), kThreads, 0, stream>>>(
          s, with_data(sizes, data), grad.const_data_ptr<scalar_t>(), r, lv);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    for (const at::Tensor& acc : accs) {
      grad_inputs.push_back(std::is_same_v<scalar_t, T> ? acc : acc.to(grad.scalar_type()));
    }
  });
  // The incoming gradient's layout.
  for (at::Tensor& g : grad_inputs) g = g.contiguous(grad_.suggest_memory_format());
  return grad_inputs;
}

at::Tensor pyramid_backward_boxes(const at::Tensor& grad_, at::TensorList features, const at::Tensor& rois_,
                                  const at::Tensor& levels_, at::ArrayRef<double> scales, int64_t pooled_height,
                                  int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  const std::vector<at::Tensor> maps = contiguous_maps(features, rois_, pooled_height, pooled_width);
  check_same(grad_, maps[0], "grad", "features[0]");
  check_grad(grad_, rois_.size(0), maps[0].size(1), pooled_height, pooled_width);
  const Pyramid<const void*> sizes = pyramid_sizes(sizes_of(maps, 2), sizes_of(maps, 3), scales);
  const c10::cuda::CUDAGuard guard(maps[0].device());
  const at::Tensor rois = rois_.contiguous();
  const at::Tensor levels = levels_of(levels_, rois);
  const at::Tensor grad = grad_.contiguous();
  const RoiShape s{maps[0].size(0), maps[0].size(1), rois.size(0), pooled_height, pooled_width, sampling_ratio,
                   aligned};
  at::Tensor grad_rois = at::zeros({s.K, 5}, rois.options());
  if (s.K == 0) return grad_rois;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_backward_boxes_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    std::vector<const scalar_t*> data;
    for (const at::Tensor& m : maps) data.push_back(m.const_data_ptr<scalar_t>());
    roi_boxes_grad_kernel<scalar_t, T><<<static_cast<unsigned int>(s.K), kThreads, 0,
                                         at::cuda::getCurrentCUDAStream()>>>(
        s, with_data(sizes, data), grad.const_data_ptr<scalar_t>(), rois.const_data_ptr<scalar_t>(),
        levels_ptr(levels), grad_rois.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_rois;
}

// The operators. roi_align is the one-level case: one map, no levels tensor.

at::Tensor multiscale_roi_align_forward_cuda(at::TensorList features, const at::Tensor& rois,
                                             const at::Tensor& levels, at::ArrayRef<double> scales,
                                             int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                             bool aligned) {
  return pyramid_forward(features, rois, levels, scales, pooled_height, pooled_width, sampling_ratio, aligned);
}

std::vector<at::Tensor> multiscale_roi_align_backward_input_cuda(
    const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& levels, at::ArrayRef<double> scales,
    int64_t pooled_height, int64_t pooled_width, int64_t batch_size, int64_t channels, at::IntArrayRef heights,
    at::IntArrayRef widths, int64_t sampling_ratio, bool aligned) {
  return pyramid_backward_input(grad, rois, levels, scales, pooled_height, pooled_width, batch_size, channels,
                                heights, widths, sampling_ratio, aligned);
}

at::Tensor multiscale_roi_align_backward_boxes_cuda(const at::Tensor& grad, at::TensorList features,
                                                    const at::Tensor& rois, const at::Tensor& levels,
                                                    at::ArrayRef<double> scales, int64_t pooled_height,
                                                    int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  return pyramid_backward_boxes(grad, features, rois, levels, scales, pooled_height, pooled_width, sampling_ratio,
                                aligned);
}

at::Tensor roi_align_forward_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                  int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  check_roi_align(input, "input", rois, pooled_height, pooled_width, c10::DeviceType::CUDA);
  return pyramid_forward({input}, rois, at::Tensor(), {spatial_scale}, pooled_height, pooled_width, sampling_ratio,
                         aligned);
}

at::Tensor roi_align_backward_input_cuda(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                         int64_t pooled_height, int64_t pooled_width, int64_t N, int64_t C,
                                         int64_t H, int64_t W, int64_t sampling_ratio, bool aligned) {
  return pyramid_backward_input(grad, rois, at::Tensor(), {spatial_scale}, pooled_height, pooled_width, N, C, {H},
                                {W}, sampling_ratio, aligned)[0];
}

at::Tensor roi_align_backward_boxes_cuda(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& rois,
                                         double spatial_scale, int64_t pooled_height, int64_t pooled_width,
                                         int64_t sampling_ratio, bool aligned) {
  check_roi_align(input, "input", rois, pooled_height, pooled_width, c10::DeviceType::CUDA);
  check_same(grad, input, "grad", "input");
  return pyramid_backward_boxes(grad, {input}, rois, at::Tensor(), {spatial_scale}, pooled_height, pooled_width,
                                sampling_ratio, aligned);
}

}  // namespace

TORCH_LIBRARY_IMPL(impls, CUDA, m) {
  m.impl("roi_align_forward", TORCH_FN(roi_align_forward_cuda));
  m.impl("roi_align_backward_input", TORCH_FN(roi_align_backward_input_cuda));
  m.impl("roi_align_backward_boxes", TORCH_FN(roi_align_backward_boxes_cuda));
  m.impl("multiscale_roi_align_forward", TORCH_FN(multiscale_roi_align_forward_cuda));
  m.impl("multiscale_roi_align_backward_input", TORCH_FN(multiscale_roi_align_backward_input_cuda));
  m.impl("multiscale_roi_align_backward_boxes", TORCH_FN(multiscale_roi_align_backward_boxes_cuda));
}

}  // namespace impls
