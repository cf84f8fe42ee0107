// Launch helpers and the deterministic image-gradient machinery shared by the CUDA kernels of both operators.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/searchsorted.h>
#include <ATen/ops/sort.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>
#include <cstdint>

namespace impls {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n items: enough to fill the GPU (32 blocks of 256 per SM, 4 waves of full
// occupancy), never more than the items need. n > 0.
inline int64_t blocks_for(int64_t n) {
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, sms * 32));
}

#define IMPLS_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// Fixed-shape tree reduction of `kValues` per-thread sums over a block of kThreads threads: the same inputs
// give the same bits on every run. The result is valid in thread 0.
template <typename T, int kValues>
__device__ __forceinline__ void block_sum(T (&v)[kValues], T* shared /* [kValues * kThreads] */) {
  for (int j = 0; j < kValues; ++j) shared[j * kThreads + threadIdx.x] = v[j];
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      for (int j = 0; j < kValues; ++j) {
        shared[j * kThreads + threadIdx.x] += shared[j * kThreads + threadIdx.x + stride];
      }
    }
    __syncthreads();
  }
  for (int j = 0; j < kValues; ++j) v[j] = shared[j * kThreads];
}

// Deterministic image gradient ("pull"): the forward's taps do not depend on the channel, so the backward lists
// every tap once as an entry (pixel, output cell, two weights) in the reference's order (box, cell, sample,
// corner), stably sorts the entries by pixel, and then each thread owns one grad_input element and sums its
// pixel's entries in that order: no atomics, the same bits on every run (and, for float64, the reference's).
// Cost: 4 entries per sample without the channel factor (e.g. 512 boxes x 7x7 x 2x2 samples: 0.4M entries,
// about 40 B each) plus one stable radix sort; the sum itself is a gather of C x entries.
struct TapEntries {
  at::Tensor pixel;  // int64 [E]: n * H * W + y * W + x (after the levels before, GatherTargets), or -1: no tap
  at::Tensor cell;   // int64 [E]: k * cells + output cell
  at::Tensor a;      // acc type [E]
  at::Tensor b;      // acc type [E]
};

// The entries sorted by pixel, and for every pixel p its range [start[p], start[p + 1]) in `order`.
struct PixelIndex {
  at::Tensor order;  // int64 [E]: entry ids, pixel-major, original order within a pixel
  at::Tensor start;  // int64 [pixels + 1]: N * H * W + 1 for one map
};

inline PixelIndex index_by_pixel(const TapEntries& e, int64_t pixels) {
  auto sorted = at::sort(e.pixel, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor boundaries = at::arange(pixels + 1, e.pixel.options());
  // Entries with pixel -1 sort first and fall before start[0]: they are never read.
  return {std::get<1>(sorted), at::searchsorted(std::get<0>(sorted), boundaries)};
}

// The outputs of one gather: up to kMaxLevels gradients [N, C, H_l, W_l] (one for crop_and_resize and
// roi_align, one per pyramid level for multi-level roi_align), passed by value. The entries number level l's
// pixels after those of the levels before it: pixel = N * (H_0 * W_0 + ... + H_{l-1} * W_{l-1}) + n * H_l * W_l
// + y * W_l + x (e.g. two 4x4 levels, N = 1: level 1's pixel (0, 0) is 16).
constexpr int kMaxLevels = 8;

template <typename scalar_t>
struct GatherTargets {
  scalar_t* data[kMaxLevels];
  int64_t plane[kMaxLevels];  // H_l * W_l
  int64_t count;
};

// grad_inputs[l][n, c, y, x] = sum over the pixel's entries in order of Combine(grad[k, c, cell], a, b).
template <typename scalar_t, typename T, typename Combine>
__global__ void gather_taps_kernel(int64_t total, int64_t N, int64_t C, int64_t cells, GatherTargets<scalar_t> out,
                                   const int64_t* __restrict__ start, const int64_t* __restrict__ order,
                                   const int64_t* __restrict__ cell, const T* __restrict__ a,
                                   const T* __restrict__ b, const scalar_t* __restrict__ grad, Combine combine) {
  IMPLS_GRID_STRIDE(i, total) {
    // Element i of the levels' gradients laid end to end: its level l, its index within it, and the pixels of
    // the levels before it.
    int64_t l = 0, local = i, pixels_before = 0;
    while (l + 1 < out.count && local >= N * C * out.plane[l]) {
      local -= N * C * out.plane[l];
      pixels_before += N * out.plane[l];
      ++l;
    }
    const int64_t plane = out.plane[l];
    const int64_t pos = local % plane;  // y * W + x
    const int64_t nc = local / plane;
    const int64_t n = nc / C, c = nc % C;
    const int64_t p = pixels_before + n * plane + pos;
    T acc = 0;
    for (int64_t j = start[p]; j < start[p + 1]; ++j) {
      const int64_t e = order[j];
      const int64_t kc = cell[e];
      const int64_t k = kc / cells;
      const T g = static_cast<T>(grad[(k * C + c) * cells + kc % cells]);
      acc += combine(g, a[e], b[e]);
    }
    out.data[l][local] = static_cast<scalar_t>(acc);
  }
}

// Fills grad_inputs (contiguous [N, C, H_l, W_l] each, at most kMaxLevels) from the tap entries.
template <typename scalar_t, typename T, typename Combine>
void gather_taps(const TapEntries& e, const at::Tensor& grad, at::TensorList grad_inputs, int64_t cells,
                 Combine combine) {
  TORCH_CHECK(!grad_inputs.empty() && grad_inputs.size() <= kMaxLevels, "gather_taps takes 1 to ", kMaxLevels,
              " gradients, got ", grad_inputs.size());
  const int64_t N = grad_inputs[0].size(0), C = grad_inputs[0].size(1);
  GatherTargets<scalar_t> out{};
  out.count = static_cast<int64_t>(grad_inputs.size());
  int64_t pixels = 0, total = 0;
  for (int64_t l = 0; l < out.count; ++l) {
    out.data[l] = grad_inputs[l].mutable_data_ptr<scalar_t>();
    out.plane[l] = grad_inputs[l].size(2) * grad_inputs[l].size(3);
    pixels += N * out.plane[l];
    total += grad_inputs[l].numel();
  }
  const PixelIndex index = index_by_pixel(e, pixels);
  if (total == 0) return;
  gather_taps_kernel<scalar_t, T><<<blocks_for(total), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      total, N, C, cells, out, index.start.const_data_ptr<int64_t>(), index.order.const_data_ptr<int64_t>(),
      e.cell.const_data_ptr<int64_t>(), e.a.const_data_ptr<T>(), e.b.const_data_ptr<T>(),
      grad.const_data_ptr<scalar_t>(), combine);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace impls
