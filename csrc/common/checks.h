// Argument checks shared by every kernel entry (CPU and CUDA), so that calling torch.ops.impls.* directly,
// without the Python validation, still cannot read out of bounds. Per-box index checks live in the kernels.
//
// The "feature map" a check names is the tensor the boxes must match in dtype and device: the image or input
// for a forward or a box gradient, the incoming gradient for an input gradient (which gets the input's sizes,
// not the input).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string>

namespace impls {

inline void check_sizes(int64_t out_h, int64_t out_w, const char* what) {
  TORCH_CHECK(out_h > 0 && out_w > 0, what, " must be positive, got ", out_h, "x", out_w);
}

inline void check_same(const at::Tensor& t, const at::Tensor& like, const char* name, const char* like_name) {
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, " must have the dtype of ", like_name, " (",
              like.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), name, " must be on the device of ", like_name, " (", like.device(),
              "), got ", t.device());
}

// map [N, C, H, W] on `device`, boxes [K, box_cols] of its dtype and device.
inline void check_map_and_boxes(const at::Tensor& map, const at::Tensor& boxes, int64_t box_cols,
                                c10::DeviceType device, const char* map_name, const char* boxes_name) {
  TORCH_CHECK(map.device().type() == device, map_name, " must be a ", c10::DeviceTypeName(device),
              " tensor, got ", map.device());
  TORCH_CHECK(map.dim() == 4, map_name, " must be [N, C, H, W], got ", map.sizes());
  TORCH_CHECK(at::isFloatingType(map.scalar_type()), map_name, " must be floating point, got ",
              map.scalar_type());
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == box_cols, boxes_name, " must be [K, ", box_cols, "], got ",
              boxes.sizes());
  check_same(boxes, map, boxes_name, map_name);
}

inline void check_crop_and_resize(const at::Tensor& map, const char* map_name, const at::Tensor& boxes,
                                  const at::Tensor& box_index, int64_t crop_height, int64_t crop_width,
                                  c10::string_view method, c10::DeviceType device) {
  check_map_and_boxes(map, boxes, 4, device, map_name, "boxes");
  TORCH_CHECK(box_index.dim() == 1 && box_index.size(0) == boxes.size(0), "box_index must be [K] with K = ",
              boxes.size(0), ", got ", box_index.sizes());
  TORCH_CHECK(box_index.scalar_type() == at::kLong, "box_index must be int64, got ", box_index.scalar_type());
  TORCH_CHECK(box_index.device() == map.device(), "box_index must be on ", map.device(), ", got ",
              box_index.device());
  check_sizes(crop_height, crop_width, "crop size");
  TORCH_CHECK(method == "bilinear" || method == "nearest", "method must be 'bilinear' or 'nearest', got '",
              std::string(method), "'");
}

// rois [K, columns]: roi_align's rows (batch_index, x1, y1, x2, y2) by default; an operator pooling other boxes
// passes its own row length.
inline void check_roi_align(const at::Tensor& map, const char* map_name, const at::Tensor& rois,
                            int64_t pooled_height, int64_t pooled_width, c10::DeviceType device,
                            int64_t columns = 5) {
  check_map_and_boxes(map, rois, columns, device, map_name, "rois");
  check_sizes(pooled_height, pooled_width, "output size");
}

// grad [K, channels, out_h, out_w], already checked as a feature map.
inline void check_grad(const at::Tensor& grad, int64_t k, int64_t channels, int64_t out_h, int64_t out_w) {
  TORCH_CHECK(grad.size(0) == k && grad.size(1) == channels && grad.size(2) == out_h && grad.size(3) == out_w,
              "grad must be [", k, ", ", channels, ", ", out_h, ", ", out_w, "], got ", grad.sizes());
}

// The input sizes an input-gradient kernel is given.
inline void check_input_sizes(int64_t n, int64_t c, int64_t h, int64_t w) {
  TORCH_CHECK(n >= 0 && c >= 0 && h >= 0 && w >= 0, "input sizes (batch_size, channels, height, width) must be ",
              "non-negative, got (", n, ", ", c, ", ", h, ", ", w, ")");
}

// levels [K] int64 (each box's map in a multi-level call) on the rois' device, checked and contiguous; an
// undefined tensor (roi_align's one map) stays undefined.
inline at::Tensor levels_of(const at::Tensor& levels, const at::Tensor& rois) {
  if (!levels.defined()) return levels;
  TORCH_CHECK(levels.dim() == 1 && levels.size(0) == rois.size(0) && levels.scalar_type() == at::kLong,
              "levels must be an int64 [K] tensor with K = ", rois.size(0), ", got ", levels.scalar_type(), " ",
              levels.sizes());
  TORCH_CHECK(levels.device() == rois.device(), "levels must be on ", rois.device(), ", got ", levels.device());
  return levels.contiguous();
}

// The kernels' view of levels: nullptr for roi_align's one map.
inline const int64_t* levels_ptr(const at::Tensor& levels) {
  return levels.defined() ? levels.const_data_ptr<int64_t>() : nullptr;
}

}  // namespace impls
