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
  at::Tensor pixel;  // int64 [E]: n * H * W + y * W + x, or -1 for no tap
  at::Tensor cell;   // int64 [E]: k * cells + output cell
  at::Tensor a;      // acc type [E]
  at::Tensor b;      // acc type [E]
};

// The entries sorted by pixel, and for every pixel p its range [start[p], start[p + 1]) in `order`.
struct PixelIndex {
  at::Tensor order;  // int64 [E]: entry ids, pixel-major, original order within a pixel
  at::Tensor start;  // int64 [N * H * W + 1]
};

inline PixelIndex index_by_pixel(const TapEntries& e, int64_t pixels) {
  auto sorted = at::sort(e.pixel, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor boundaries = at::arange(pixels + 1, e.pixel.options());
  // Entries with pixel -1 sort first and fall before start[0]: they are never read.
  return {std::get<1>(sorted), at::searchsorted(std::get<0>(sorted), boundaries)};
}

// grad_input[n, c, y, x] = sum over the pixel's entries in order of Combine(grad[k, c, cell], a, b).
template <typename scalar_t, typename T, typename Combine>
__global__ void gather_taps_kernel(int64_t total, int64_t C, int64_t plane, int64_t cells,
                                   const int64_t* __restrict__ start, const int64_t* __restrict__ order,
                                   const int64_t* __restrict__ cell, const T* __restrict__ a,
                                   const T* __restrict__ b, const scalar_t* __restrict__ grad,
                                   scalar_t* __restrict__ grad_input, Combine combine) {
  IMPLS_GRID_STRIDE(i, total) {
    const int64_t pos = i % plane;  // y * W + x
    const int64_t nc = i / plane;
    const int64_t n = nc / C, c = nc % C;
    const int64_t p = n * plane + pos;
    T acc = 0;
    for (int64_t j = start[p]; j < start[p + 1]; ++j) {
      const int64_t e = order[j];
      const int64_t kc = cell[e];
      const int64_t k = kc / cells;
      const T g = static_cast<T>(grad[(k * C + c) * cells + kc % cells]);
      acc += combine(g, a[e], b[e]);
    }
    grad_input[i] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t, typename T, typename Combine>
void gather_taps(const TapEntries& e, const at::Tensor& grad, at::Tensor& grad_input, int64_t cells,
                 Combine combine) {
  const int64_t N = grad_input.size(0), C = grad_input.size(1);
  const int64_t plane = grad_input.size(2) * grad_input.size(3);
  const PixelIndex index = index_by_pixel(e, N * plane);
  const int64_t total = grad_input.numel();
  if (total == 0) return;
  gather_taps_kernel<scalar_t, T><<<blocks_for(total), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      total, C, plane, cells, index.start.const_data_ptr<int64_t>(), index.order.const_data_ptr<int64_t>(),
      e.cell.const_data_ptr<int64_t>(), e.a.const_data_ptr<T>(), e.b.const_data_ptr<T>(),
      grad.const_data_ptr<scalar_t>(), grad_input.mutable_data_ptr<scalar_t>(), combine);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace impls
