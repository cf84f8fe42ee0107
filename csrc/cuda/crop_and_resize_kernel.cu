// crop_and_resize on CUDA: the same sampling math as the CPU kernels (csrc/bilinear.h).
//
// Forward: one thread per output element (k, c, y, x), grid-stride.
// Image gradient: by default one thread per incoming gradient element, atomically adding its (up to) four taps
// into grad_image with at::native::fastAtomicAdd (paired half2/bfloat162 atomics for half types; see
// roi_align_kernel.cu). With torch.use_deterministic_algorithms(True): the atomic-free "pull" of
// cuda_common.cuh, which sums in float for half types and rounds once.
// Box gradient: one block per box, a fixed partition of (channel, cell) over its threads and a fixed tree
// reduction: deterministic.
// Invalid input that slipped past the Python checks (box_index outside [0, N)) cannot raise here without a
// device sync; such a box reads nothing: its crop is NaN and it contributes no gradient.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/native/cuda/KernelUtils.cuh>
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

struct CropShape {
  int64_t N, C, H, W, K, crop_h, crop_w;
  __host__ __device__ int64_t cells() const { return crop_h * crop_w; }
};

// The in-range sample of output cell (py, px) of box k, or valid = false.
template <typename T>
struct CropSample {
  bool valid;
  int64_t n;
  CropTap<T> y, x;
};

template <typename scalar_t, typename T>
__device__ __forceinline__ CropSample<T> crop_sample(const scalar_t* boxes, const int64_t* box_index,
                                                     const CropShape& s, int64_t k, int64_t py, int64_t px) {
  CropSample<T> r{};
  r.n = box_index[k];
  const T y1 = static_cast<T>(boxes[k * 4 + 0]), x1 = static_cast<T>(boxes[k * 4 + 1]);
  const T y2 = static_cast<T>(boxes[k * 4 + 2]), x2 = static_cast<T>(boxes[k * 4 + 3]);
  const T in_y = crop_coordinate<T>(y1, y2, py, s.crop_h, s.H);
  const T in_x = crop_coordinate<T>(x1, x2, px, s.crop_w, s.W);
  r.valid = !crop_out_of_range(in_y, s.H) && !crop_out_of_range(in_x, s.W);
  if (r.valid) {
    r.y = crop_tap(in_y);
    r.x = crop_tap(in_x);
  }
  return r;
}

template <typename scalar_t, typename T>
__global__ void crop_forward_kernel(CropShape s, const scalar_t* __restrict__ image,
                                    const scalar_t* __restrict__ boxes, const int64_t* __restrict__ box_index,
                                    bool nearest, T extrapolation_value, scalar_t* __restrict__ out) {
  const int64_t total = s.K * s.C * s.cells();
  IMPLS_GRID_STRIDE(i, total) {
    const int64_t px = i % s.crop_w, py = (i / s.crop_w) % s.crop_h;
    const int64_t c = (i / s.cells()) % s.C, k = i / (s.cells() * s.C);
    const int64_t n = box_index[k];
    if (!(n >= 0 && n < s.N)) {
      out[i] = static_cast<scalar_t>(std::numeric_limits<T>::quiet_NaN());
      continue;
    }
    const T y1 = static_cast<T>(boxes[k * 4 + 0]), x1 = static_cast<T>(boxes[k * 4 + 1]);
    const T y2 = static_cast<T>(boxes[k * 4 + 2]), x2 = static_cast<T>(boxes[k * 4 + 3]);
    const T in_y = crop_coordinate<T>(y1, y2, py, s.crop_h, s.H);
    const T in_x = crop_coordinate<T>(x1, x2, px, s.crop_w, s.W);
    if (crop_out_of_range(in_y, s.H) || crop_out_of_range(in_x, s.W)) {
      out[i] = static_cast<scalar_t>(extrapolation_value);
      continue;
    }
    const scalar_t* plane = image + (n * s.C + c) * s.H * s.W;
    if (nearest) {
      out[i] = plane[round_half_away(in_y) * s.W + round_half_away(in_x)];
      continue;
    }
    const CropTap<T> y = crop_tap(in_y), x = crop_tap(in_x);
    const T tl = static_cast<T>(plane[y.lo * s.W + x.lo]), tr = static_cast<T>(plane[y.lo * s.W + x.hi]);
    const T bl = static_cast<T>(plane[y.hi * s.W + x.lo]), br = static_cast<T>(plane[y.hi * s.W + x.hi]);
    const T t = tl + (tr - tl) * x.lerp;
    const T b = bl + (br - bl) * x.lerp;
    out[i] = static_cast<scalar_t>(t + (b - t) * y.lerp);
  }
}

// Atomic image gradient: one thread per grad element.
template <typename scalar_t, typename T>
__global__ void crop_image_grad_atomic_kernel(CropShape s, const scalar_t* __restrict__ grad,
                                              const scalar_t* __restrict__ boxes,
                                              const int64_t* __restrict__ box_index, bool nearest,
                                              scalar_t* __restrict__ grad_image) {
  const int64_t total = s.K * s.C * s.cells();
  const int64_t numel = s.N * s.C * s.H * s.W;
  IMPLS_GRID_STRIDE(i, total) {
    const int64_t px = i % s.crop_w, py = (i / s.crop_w) % s.crop_h;
    const int64_t c = (i / s.cells()) % s.C, k = i / (s.cells() * s.C);
    const CropSample<T> smp = crop_sample<scalar_t, T>(boxes, box_index, s, k, py, px);
    if (!smp.valid || !(smp.n >= 0 && smp.n < s.N)) continue;
    const int64_t plane = (smp.n * s.C + c) * s.H * s.W;
    const auto add = [&](int64_t y, int64_t x, T v) {
      at::native::fastAtomicAdd(grad_image, plane + y * s.W + x, numel, static_cast<scalar_t>(v), true);
    };
    const T g = static_cast<T>(grad[i]);
    if (nearest) {
      // The crop tap's floor/ceil are not needed: nearest rounds the coordinate itself.
      const T y1 = static_cast<T>(boxes[k * 4 + 0]), y2 = static_cast<T>(boxes[k * 4 + 2]);
      const T x1 = static_cast<T>(boxes[k * 4 + 1]), x2 = static_cast<T>(boxes[k * 4 + 3]);
      const int64_t ny = round_half_away(crop_coordinate<T>(y1, y2, py, s.crop_h, s.H));
      const int64_t nx = round_half_away(crop_coordinate<T>(x1, x2, px, s.crop_w, s.W));
      add(ny, nx, g);
      continue;
    }
    const T d_top = (1 - smp.y.lerp) * g;
    const T d_bottom = smp.y.lerp * g;
    add(smp.y.lo, smp.x.lo, (1 - smp.x.lerp) * d_top);
    add(smp.y.lo, smp.x.hi, smp.x.lerp * d_top);
    add(smp.y.hi, smp.x.lo, (1 - smp.x.lerp) * d_bottom);
    add(smp.y.hi, smp.x.hi, smp.x.lerp * d_bottom);
  }
}

// Deterministic image gradient, step 1: the taps of every sample (k, y, x), four entries each, in the
// reference's order. Contribution of an entry: a * (b * g) = (1 - x_lerp) * ((1 - y_lerp) * g) etc.
template <typename scalar_t, typename T>
__global__ void crop_taps_kernel(CropShape s, const scalar_t* __restrict__ boxes,
                                 const int64_t* __restrict__ box_index, bool nearest, int64_t* __restrict__ pixel,
                                 int64_t* __restrict__ cell, T* __restrict__ a, T* __restrict__ b) {
  const int64_t samples = s.K * s.cells();
  IMPLS_GRID_STRIDE(i, samples) {
    const int64_t px = i % s.crop_w, py = (i / s.crop_w) % s.crop_h, k = i / s.cells();
    const CropSample<T> smp = crop_sample<scalar_t, T>(boxes, box_index, s, k, py, px);
    const bool ok = smp.valid && smp.n >= 0 && smp.n < s.N;
    const int64_t base = smp.n * s.H * s.W;
    for (int corner = 0; corner < 4; ++corner) {
      const int64_t e = i * 4 + corner;
      cell[e] = i;
      pixel[e] = -1;
      a[e] = 0;
      b[e] = 0;
      if (!ok) continue;
      if (nearest) {
        if (corner == 0) {
          const T y1 = static_cast<T>(boxes[k * 4 + 0]), y2 = static_cast<T>(boxes[k * 4 + 2]);
          const T x1 = static_cast<T>(boxes[k * 4 + 1]), x2 = static_cast<T>(boxes[k * 4 + 3]);
          const int64_t ny = round_half_away(crop_coordinate<T>(y1, y2, py, s.crop_h, s.H));
          const int64_t nx = round_half_away(crop_coordinate<T>(x1, x2, px, s.crop_w, s.W));
          pixel[e] = base + ny * s.W + nx;
          a[e] = 1;  // 1 * (1 * g) == g exactly
          b[e] = 1;
        }
        continue;
      }
      const bool bottom = corner >= 2, right = corner % 2 == 1;
      pixel[e] = base + (bottom ? smp.y.hi : smp.y.lo) * s.W + (right ? smp.x.hi : smp.x.lo);
      a[e] = right ? smp.x.lerp : 1 - smp.x.lerp;
      b[e] = bottom ? smp.y.lerp : 1 - smp.y.lerp;
    }
  }
}

template <typename T>
struct CropCombine {
  __device__ __forceinline__ T operator()(T g, T a, T b) const { return a * (b * g); }
};

// Box gradient: one block per box.
template <typename scalar_t, typename T>
__global__ void crop_boxes_grad_kernel(CropShape s, const scalar_t* __restrict__ grad,
                                       const scalar_t* __restrict__ image, const scalar_t* __restrict__ boxes,
                                       const int64_t* __restrict__ box_index, scalar_t* __restrict__ grad_boxes) {
  __shared__ T shared[4 * kThreads];
  const int64_t k = blockIdx.x;
  T sums[4] = {0, 0, 0, 0};  // d y1, d x1, d y2, d x2
  const int64_t items = s.C * s.cells();
  for (int64_t t = threadIdx.x; t < items; t += blockDim.x) {
    const int64_t c = t / s.cells(), cell = t % s.cells();
    const int64_t py = cell / s.crop_w, px = cell % s.crop_w;
    const CropSample<T> smp = crop_sample<scalar_t, T>(boxes, box_index, s, k, py, px);
    if (!smp.valid || !(smp.n >= 0 && smp.n < s.N)) continue;
    const scalar_t* plane = image + (smp.n * s.C + c) * s.H * s.W;
    const T g = static_cast<T>(grad[k * items + t]);
    const CropTap<T>& y = smp.y;
    const CropTap<T>& x = smp.x;
    const T tl = static_cast<T>(plane[y.lo * s.W + x.lo]), tr = static_cast<T>(plane[y.lo * s.W + x.hi]);
    const T bl = static_cast<T>(plane[y.hi * s.W + x.lo]), br = static_cast<T>(plane[y.hi * s.W + x.hi]);
    const T gy = g * ((1 - x.lerp) * (bl - tl) + x.lerp * (br - tr));
    const T gx = g * ((1 - y.lerp) * (tr - tl) + y.lerp * (br - bl));
    T dy_lo, dy_hi, dx_lo, dx_hi;
    crop_coordinate_grads<T>(py, s.crop_h, s.H, dy_lo, dy_hi);
    crop_coordinate_grads<T>(px, s.crop_w, s.W, dx_lo, dx_hi);
    sums[0] += gy * dy_lo;
    sums[1] += gx * dx_lo;
    sums[2] += gy * dy_hi;
    sums[3] += gx * dx_hi;
  }
  block_sum<T, 4>(sums, shared);
  if (threadIdx.x == 0) {
    for (int j = 0; j < 4; ++j) grad_boxes[k * 4 + j] = static_cast<scalar_t>(sums[j]);
  }
}

at::Tensor crop_and_resize_forward_cuda(const at::Tensor& image_, const at::Tensor& boxes_,
                                        const at::Tensor& box_index_, int64_t crop_height, int64_t crop_width,
                                        c10::string_view method, double extrapolation_value) {
  check_crop_and_resize(image_, boxes_, box_index_, crop_height, crop_width, method, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(image_.device());
  // A channels_last or strided image is copied once here (one pass over N*C*H*W); the kernels index NCHW.
  const at::Tensor image = image_.contiguous();
  const at::Tensor boxes = boxes_.contiguous();
  const at::Tensor box_index = box_index_.contiguous();
  const CropShape s{image.size(0), image.size(1), image.size(2), image.size(3), boxes.size(0), crop_height,
                    crop_width};
  at::Tensor out = at::empty({s.K, s.C, crop_height, crop_width}, image.options());
  if (out.numel() == 0) return out;
  const bool nearest = method == "nearest";
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, image.scalar_type(), "crop_and_resize_forward_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    crop_forward_kernel<scalar_t, T><<<blocks_for(out.numel()), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        s, image.const_data_ptr<scalar_t>(), boxes.const_data_ptr<scalar_t>(), box_index.const_data_ptr<int64_t>(),
        nearest, static_cast<T>(extrapolation_value), out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> crop_and_resize_backward_cuda(const at::Tensor& grad_, const at::Tensor& image_,
                                                                 const at::Tensor& boxes_,
                                                                 const at::Tensor& box_index_, int64_t crop_height,
                                                                 int64_t crop_width, c10::string_view method,
                                                                 bool image_grad, bool boxes_grad) {
  check_crop_and_resize(image_, boxes_, box_index_, crop_height, crop_width, method, c10::DeviceType::CUDA);
  check_grad(grad_, image_, boxes_.size(0), crop_height, crop_width);
  const c10::cuda::CUDAGuard guard(image_.device());
  const at::Tensor image = image_.contiguous();
  const at::Tensor boxes = boxes_.contiguous();
  const at::Tensor box_index = box_index_.contiguous();
  const at::Tensor grad = grad_.contiguous();
  const CropShape s{image.size(0), image.size(1), image.size(2), image.size(3), boxes.size(0), crop_height,
                    crop_width};
  const bool nearest = method == "nearest";
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  const auto stream = at::cuda::getCurrentCUDAStream();
  at::Tensor grad_image = at::empty({0}, image.options());
  at::Tensor grad_boxes = boxes_grad ? at::zeros({s.K, 4}, boxes.options()) : at::empty({0}, boxes.options());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, image.scalar_type(), "crop_and_resize_backward_cuda", [&] {
    using T = at::opmath_type<scalar_t>;
    const scalar_t* bx = boxes.const_data_ptr<scalar_t>();
    const int64_t* idx = box_index.const_data_ptr<int64_t>();
    const int64_t samples = s.K * s.cells();
    if (image_grad && deterministic) {
      grad_image = at::empty({s.N, s.C, s.H, s.W}, image.options());
      const auto acc_options = image.options().dtype(c10::CppTypeToScalarType<T>::value);
      TapEntries e{at::empty({samples * 4}, box_index.options()), at::empty({samples * 4}, box_index.options()),
                   at::empty({samples * 4}, acc_options), at::empty({samples * 4}, acc_options)};
      if (samples > 0) {
        crop_taps_kernel<scalar_t, T><<<blocks_for(samples), kThreads, 0, stream>>>(
            s, bx, idx, nearest, e.pixel.mutable_data_ptr<int64_t>(), e.cell.mutable_data_ptr<int64_t>(),
            e.a.mutable_data_ptr<T>(), e.b.mutable_data_ptr<T>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      gather_taps<scalar_t, T>(e, grad, grad_image, s.cells(), CropCombine<T>{});
    } else if (image_grad) {
      grad_image = at::zeros({s.N, s.C, s.H, s.W}, image.options());
      if (grad.numel() > 0) {
        crop_image_grad_atomic_kernel<scalar_t, T><<<blocks_for(grad.numel()), kThreads, 0, stream>>>(
            s, grad.const_data_ptr<scalar_t>(), bx, idx, nearest, grad_image.mutable_data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
    // Nearest sampling has zero derivative with respect to the box almost everywhere: grad_boxes stays 0.
    if (boxes_grad && !nearest && s.K > 0) {
      crop_boxes_grad_kernel<scalar_t, T><<<static_cast<unsigned int>(s.K), kThreads, 0, stream>>>(
          s, grad.const_data_ptr<scalar_t>(), image.const_data_ptr<scalar_t>(), bx, idx,
          grad_boxes.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {grad_image, grad_boxes};
}

}  // namespace

TORCH_LIBRARY_IMPL(impls, CUDA, m) {
  m.impl("crop_and_resize_forward", TORCH_FN(crop_and_resize_forward_cuda));
  m.impl("crop_and_resize_backward", TORCH_FN(crop_and_resize_backward_cuda));
}

}  // namespace impls
