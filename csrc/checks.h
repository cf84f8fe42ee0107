// Argument checks shared by every kernel entry (CPU and CUDA), so that calling torch.ops.impls.* directly,
// without the Python validation, still cannot read out of bounds. Per-box index checks live in the kernels.
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

// image [N, C, H, W], boxes [K, box_cols]; `device` is "cpu" or "cuda" for the kernel being run.
inline void check_image_and_boxes(const at::Tensor& image, const at::Tensor& boxes, int64_t box_cols,
                                  c10::DeviceType device, const char* image_name, const char* boxes_name) {
  TORCH_CHECK(image.device().type() == device, image_name, " must be a ", c10::DeviceTypeName(device),
              " tensor, got ", image.device());
  TORCH_CHECK(image.dim() == 4, image_name, " must be [N, C, H, W], got ", image.sizes());
  TORCH_CHECK(at::isFloatingType(image.scalar_type()), image_name, " must be floating point, got ",
              image.scalar_type());
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == box_cols, boxes_name, " must be [K, ", box_cols, "], got ",
              boxes.sizes());
  check_same(boxes, image, boxes_name, image_name);
}

inline void check_crop_and_resize(const at::Tensor& image, const at::Tensor& boxes, const at::Tensor& box_index,
                                  int64_t crop_height, int64_t crop_width, c10::string_view method,
                                  c10::DeviceType device) {
  check_image_and_boxes(image, boxes, 4, device, "image", "boxes");
  TORCH_CHECK(box_index.dim() == 1 && box_index.size(0) == boxes.size(0), "box_index must be [K] with K = ",
              boxes.size(0), ", got ", box_index.sizes());
  TORCH_CHECK(box_index.scalar_type() == at::kLong, "box_index must be int64, got ", box_index.scalar_type());
  TORCH_CHECK(box_index.device() == image.device(), "box_index must be on ", image.device(), ", got ",
              box_index.device());
  check_sizes(crop_height, crop_width, "crop size");
  TORCH_CHECK(method == "bilinear" || method == "nearest", "method must be 'bilinear' or 'nearest', got '",
              std::string(method), "'");
}

inline void check_roi_align(const at::Tensor& input, const at::Tensor& rois, int64_t pooled_height,
                            int64_t pooled_width, c10::DeviceType device) {
  check_image_and_boxes(input, rois, 5, device, "input", "rois");
  check_sizes(pooled_height, pooled_width, "output size");
}

// grad [K, C, out_h, out_w] for an image [N, C, H, W] and K boxes.
inline void check_grad(const at::Tensor& grad, const at::Tensor& image, int64_t k, int64_t out_h, int64_t out_w) {
  check_same(grad, image, "grad", "the input");
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == k && grad.size(1) == image.size(1) && grad.size(2) == out_h &&
                  grad.size(3) == out_w,
              "grad must be [", k, ", ", image.size(1), ", ", out_h, ", ", out_w, "], got ", grad.sizes());
}

}  // namespace impls
