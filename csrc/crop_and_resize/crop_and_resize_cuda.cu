// crop_and_resize on CUDA: the same sampling math as the CPU kernels (csrc/common/bilinear.h).
//
// Sample coordinates are computed in T (float for half/bfloat16/float32), as TensorFlow and the CPU kernel do.
// Forward: one thread per output element (k, c, y, x), grid-stride.
// Image gradient: by default one thread per incoming gradient element, atomically adding its (up to) four taps
// into a gradient of T (half types accumulate in float and are rounded once at the end, as on the CPU). With
// torch.use_deterministic_algorithms(True): the atomic-free "pull" of cuda_common.cuh, which also sums in T and
// rounds once.
// Box gradient: one block per box, a fixed partition of (channel, cell) over its threads and a fixed tree
// reduction: deterministic.
// Invalid input that slipped past the Python checks (box_index outside [0, N)) cannot raise here without a
// device sync; such a box reads nothing: its crop is NaN and it contributes no gradient.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>
#include <type_traits>

#include "common/bilinear.h"
#include "common/checks.h"
#include "common/cuda_common.cuh"

namespace impls {
namespace {

struct CropShape {
  int64_t N, C, H, W, K, crop_height, crop_width;
  __host__ __device__ int64_t cells() const { return crop_height * crop_width; }
};

// Output cell (py, px) of box k: everything the kernels need, unpacked from the box once.
template <typename T>
struct CropSample {
  bool index_ok;  // box_index[k] in [0, N): the box may be read
  bool in_range;  // the sample is inside the image on both axes; else it is extrapolation_value
  int64_t n;
  CropTap<T> y, x;     // bilinear taps (valid when in_range)
  int64_t nearest_y;   // round half away from zero (valid when in_range)
  int64_t nearest_x;
};

template <typename scalar_t, typename T>
__device__ __forceinline__ CropSample<T> crop_sample(const scalar_t* boxes, const int64_t* box_index,
                                                     const CropShape& s, int64_t k, int64_t py, int64_t px) {
  CropSample<T> r{};
  r.n = box_index[k];
  r.index_ok = r.n >= 0 && r.n < s.N;
  const T y1 = static_cast<T>(boxes[k * 4 + 0]), x1 = static_cast<T>(boxes[k * 4 + 1]);
  const T y2 = static_cast<T>(boxes[k * 4 + 2]), x2 = static_cast<T>(boxes[k * 4 + 3]);
  const T in_y = crop_coordinate<T>(y1, y2, py, s.crop_height, s.H);
  const T in_x = crop_coordinate<T>(x1, x2, px, s.crop_width, s.W);
  r.in_range = !crop_out_of_range(in_y, s.H) && !crop_out_of_range(in_x, s.W);
  if (r.in_range) {  // a NaN or far-away coordinate never reaches floor/int conversion
    r.y = crop_tap(in_y);
    r.x = crop_tap(in_x);
    r.nearest_y = round_half_away(in_y);
    r.nearest_x = round_half_away(in_x);
  }
  return r;
}

template <typename scalar_t, typename T>
__global__ void crop_forward_kernel(CropShape s, const scalar_t* __restrict__ image,
                                    const scalar_t* __restrict__ boxes, const int64_t* __restrict__ box_index,
                                    bool nearest, T extrapolation_value, scalar_t* __restrict__ out) {
  const int64_t total = s.K * s.C * s.cells();
  IMPLS_GRID_STRIDE(i, total) {
    const int64_t px = i % s.crop_width, py = (i / s.crop_width) % s.crop_height;
    const int64_t c = (i / s.cells()) % s.C, k = i / (s.cells() * s.C);
    const CropSample<T> smp = crop_sample<scalar_t, T>(boxes, box_index, s, k, py, px);
    if (!smp.index_ok) {
      out[i] = static_cast<scalar_t>(std::numeric_limits<T>::quiet_NaN());
      continue;
    }
    if (!smp.in_range) {
      out[i] = static_cast<scalar_t>(extrapolation_value);
      continue;
    }
    const scalar_t* plane = image + (smp.n * s.C + c) * s.H * s.W;
    if (nearest) {
      out[i] = plane[smp.nearest_y * s.W + smp.nearest_x];
      continue;
    }
    const CropTap<T>& y = smp.y;
    const CropTap<T>& x = smp.x;
    const T tl = static_cast<T>(plane[y.lo * s.W + x.lo]), tr = static_cast<T>(plane[y.lo * s.W + x.hi]);
    const T bl = static_cast<T>(plane[y.hi * s.W + x.lo]), br = static_cast<T>(plane[y.hi * s.W + x.hi]);
    const T t = tl + (tr - tl) * x.lerp;
    const T b = bl + (br - bl) * x.lerp;
    out[i] = static_cast<scalar_t>(t + (b - t) * y.lerp);
  }
}

// Atomic image gradient: one thread per grad element, into grad_image, a tensor of T (native float/double
// atomics).
template <typename scalar_t, typename T>
__global__ void crop_image_grad_atomic_kernel(CropShape s, const scalar_t* __restrict__ grad,
                                              const scalar_t* __restrict__ boxes,
                                              const int64_t* __restrict__ box_index, bool nearest,
                                              T* __restrict__ grad_image) {
  const int64_t total = s.K * s.C * s.cells();
  IMPLS_GRID_STRIDE(i, total) {
    const int64_t px = i % s.crop_width, py = (i / s.crop_width) % s.crop_height;
    const int64_t c = (i / s.cells()) % s.C, k = i / (s.cells() * s.C);
    const CropSample<T> smp = crop_sample<scalar_t, T>(boxes, box_index, s, k, py, px);
    if (!smp.index_ok || !smp.in_range) continue;
    T* plane = grad_image + (smp.n * s.C + c) * s.H * s.W;
    const T g = static_cast<T>(grad[i]);
    if (nearest) {
      gpuAtomicAddNoReturn(plane + smp.nearest_y * s.W + smp.nearest_x, g);
      continue;
    }
    const CropTap<T>& y = smp.y;
    const CropTap<T>& x = smp.x;
    const T d_top = (1 - y.lerp) * g;
    const T d_bottom = y.lerp * g;
    gpuAtomicAddNoReturn(plane + y.lo * s.W + x.lo, (1 - x.lerp) * d_top);
    gpuAtomicAddNoReturn(plane + y.lo * s.W + x.hi, x.lerp * d_top);
    gpuAtomicAddNoReturn(plane + y.hi * s.W + x.lo, (1 - x.lerp) * d_bottom);
    gpuAtomicAddNoReturn(plane + y.hi * s.W + x.hi, x.lerp * d_bottom);
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
    const int64_t px = i % s.crop_width, py = (i / s.crop_width) % s.crop_height, k = i / s.cells();
    const CropSample<T> smp = crop_sample<scalar_t, T>(boxes, box_index, s, k, py, px);
    const bool ok = smp.index_ok && smp.in_range;
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
          pixel[e] = base + smp.nearest_y * s.W + smp.nearest_x;
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
  for (int64_t item = threadIdx.x; item < items; item += blockDim.x) {
    const int64_t c = item / s.cells(), cell = item % s.cells();
    const int64_t py = cell / s.crop_width, px = cell % s.crop_width;
    const CropSample<T> smp = crop_sample<scalar_t, T>(boxes, box_index, s, k, py, px);
    if (!smp.index_ok || !smp.in_range) continue;
    const scalar_t* plane = image + (smp.n * s.C + c) * s.H * s.W;
    const T g = static_cast<T>(grad[k * items + item]);
    const CropTap<T>& y = smp.y;
    const CropTap<T>& x = smp.x;
    const T tl = static_cast<T>(plane[y.lo * s.W + x.lo]), tr = static_cast<T>(plane[y.lo * s.W + x.hi]);
    const T bl = static_cast<T>(plane[y.hi * s.W + x.lo]), br = static_cast<T>(plane[y.hi * s.W + x.hi]);
    const TapSlopes<T> slope = tap_slopes(tl, tr, bl, br, x.lerp, y.lerp);
    const T gy = g * slope.dy;
    const T gx = g * slope.dx;
    T dy_lo, dy_hi, dx_lo, dx_hi;
    crop_coordinate_grads<T>(py, s.crop_height, s.H, dy_lo, dy_hi);
    crop_coordinate_grads<T>(px, s.crop_width, s.W, dx_lo, dx_hi);
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
  check_crop_and_resize(image_, "image", boxes_, box_index_, crop_height, crop_width, method,
                        c10::DeviceType::CUDA);
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
  // The kernels index NCHW; a channels_last caller gets a channels_last output (one copy of the output).
  return out.contiguous(image_.suggest_memory_format());
}

at::Tensor crop_and_resize_backward_input_cuda(const at::Tensor& grad_, const at::Tensor& boxes_,
                                               const at::Tensor& box_index_, int64_t crop_height,
                                               int64_t crop_width, int64_t N, int64_t C, int64_t H, int64_t W,
                                               c10::string_view method) {
  check_crop_and_resize(grad_, "grad", boxes_, box_index_, crop_height, crop_width, method, c10::DeviceType::CUDA);
  check_grad(grad_, boxes_.size(0), C, crop_height, crop_width);
  check_input_sizes(N, C, H, W);
  const c10::cuda::CUDAGuard guard(grad_.device());
  const at::Tensor boxes = boxes_.contiguous();
  const at::Tensor box_index = box_index_.contiguous();
  const at::Tensor grad = grad_.contiguous();
  const CropShape s{N, C, H, W, boxes.size(0), crop_height, crop_width};
  const bool nearest = method == "nearest";
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  const auto stream = at::cuda::getCurrentCUDAStream();
  at::Tensor grad_image;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "crop_and_resize_backward_input_cuda",
                                  [&] {
    using T = at::opmath_type<scalar_t>;
    const scalar_t* bx = boxes.const_data_ptr<scalar_t>();
    const int64_t* idx = box_index.const_data_ptr<int64_t>();
    const auto acc_options = grad.options().dtype(c10::CppTypeToScalarType<T>::value);
    if (deterministic) {
      const int64_t samples = s.K * s.cells();
      grad_image = at::empty({N, C, H, W}, grad.options());
      TapEntries e{at::empty({samples * 4}, box_index.options()), at::empty({samples * 4}, box_index.options()),
                   at::empty({samples * 4}, acc_options), at::empty({samples * 4}, acc_options)};
      if (samples > 0) {
        crop_taps_kernel<scalar_t, T><<<blocks_for(samples), kThreads, 0, stream>>>(
            s, bx, idx, nearest, e.pixel.mutable_data_ptr<int64_t>(), e.cell.mutable_data_ptr<int64_t>(),
            e.a.mutable_data_ptr<T>(), e.b.mutable_data_ptr<T>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      gather_taps<scalar_t, T>(e, grad, grad_image, s.cells(), CropCombine<T>{});
      return;
    }
    at::Tensor acc = at::zeros({N, C, H, W}, acc_options);
    if (grad.numel() > 0) {
      crop_image_grad_atomic_kernel<scalar_t, T><<<blocks_for(grad.numel()), kThreads, 0, stream>>>(
          s, grad.const_data_ptr<scalar_t>(), bx, idx, nearest, acc.mutable_data_ptr<T>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    grad_image = std::is_same_v<scalar_t, T> ? acc : acc.to(grad.scalar_type());
  });
  return grad_image.contiguous(grad_.suggest_memory_format());  // the incoming gradient's layout
}

at::Tensor crop_and_resize_backward_boxes_cuda(const at::Tensor& grad_, const at::Tensor& image_,
                                               const at::Tensor& boxes_, const at::Tensor& box_index_,
                                               int64_t crop_height, int64_t crop_width, c10::string_view method) {
  check_crop_and_resize(image_, "image", boxes_, box_index_, crop_height, crop_width, method,
                        c10::DeviceType::CUDA);
  check_same(grad_, image_, "grad", "image");
  check_grad(grad_, boxes_.size(0), image_.size(1), crop_height, crop_width);
  const c10::cuda::CUDAGuard guard(image_.device());
  const at::Tensor image = image_.contiguous();
  const at::Tensor boxes = boxes_.contiguous();
  const at::Tensor box_index = box_index_.contiguous();
  const at::Tensor grad = grad_.contiguous();
  const CropShape s{image.size(0), image.size(1), image.size(2), image.size(3), boxes.size(0), crop_height,
                    crop_width};
  at::Tensor grad_boxes = at::zeros({s.K, 4}, boxes.options());
  // Nearest sampling has zero derivative with respect to the box almost everywhere: grad_boxes stays 0.
  if (method == "nearest" || s.K == 0) return grad_boxes;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, image.scalar_type(), "crop_and_resize_backward_boxes_cuda",
                                  [&] {
    using T = at::opmath_type<scalar_t>;
    crop_boxes_grad_kernel<scalar_t, T><<<static_cast<unsigned int>(s.K), kThreads, 0,
                                          at::cuda::getCurrentCUDAStream()>>>(
        s, grad.const_data_ptr<scalar_t>(), image.const_data_ptr<scalar_t>(), boxes.const_data_ptr<scalar_t>(),
        box_index.const_data_ptr<int64_t>(), grad_boxes.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_boxes;
}

}  // namespace

TORCH_LIBRARY_IMPL(impls, CUDA, m) {
  m.impl("crop_and_resize_forward", TORCH_FN(crop_and_resize_forward_cuda));
  m.impl("crop_and_resize_backward_input", TORCH_FN(crop_and_resize_backward_input_cuda));
  m.impl("crop_and_resize_backward_boxes", TORCH_FN(crop_and_resize_backward_boxes_cuda));
}

}  // namespace impls
