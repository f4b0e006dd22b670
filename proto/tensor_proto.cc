#include "proto/tensor_proto.h"

#include <ATen/ATen.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "Tensor.data is little-endian and copied as is");

namespace vae {
namespace {

std::string ShapeString(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

// The enum's name, or its number for values this build does not know.
std::string DataTypeName(int dtype) {
  const std::string& name = v1::DataType_Name(static_cast<v1::DataType>(dtype));
  return name.empty() ? absl::StrCat(dtype) : name;
}

// Validates `proto` and returns its dtype and shape.
absl::Status CheckTensorProto(const v1::Tensor& proto, const std::string& field, at::ScalarType* out_type,
                              std::vector<int64_t>* out_shape) {
  at::ScalarType type;
  int64_t element_size = 0;
  switch (proto.dtype()) {
    case v1::DATA_TYPE_FLOAT32:
      type = at::kFloat;
      element_size = 4;
      break;
    case v1::DATA_TYPE_UINT8:
      type = at::kByte;
      element_size = 1;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".dtype ", DataTypeName(proto.dtype()),
                       " is not supported; expected DATA_TYPE_FLOAT32 or DATA_TYPE_UINT8"));
  }
  if (proto.shape_size() > kMaxTensorRank) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".shape has ", proto.shape_size(), " dimensions; expected at most ", kMaxTensorRank));
  }
  int64_t elements = 1;
  for (int i = 0; i < proto.shape_size(); ++i) {
    const int64_t d = proto.shape(i);
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".shape ", ShapeString(proto.shape()), " has a negative dimension"));
    }
    if (d > 0 && elements > kMaxTensorElements / d) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".shape ", ShapeString(proto.shape()), " holds more than ",
                                                     kMaxTensorElements, " elements"));
    }
    elements *= d;
  }
  const int64_t expected_bytes = elements * element_size;
  if (static_cast<int64_t>(proto.data().size()) != expected_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".data is ", proto.data().size(), " bytes; expected ",
                                                   expected_bytes, " (shape ", ShapeString(proto.shape()), " x ",
                                                   element_size, " bytes of ", DataTypeName(proto.dtype()), ")"));
  }
  *out_type = type;
  out_shape->assign(proto.shape().begin(), proto.shape().end());
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<at::Tensor> TensorFromProto(const v1::Tensor& proto, const std::string& field) {
  at::ScalarType type;
  std::vector<int64_t> shape;
  if (auto status = CheckTensorProto(proto, field, &type, &shape); !status.ok()) return status;
  at::Tensor tensor = at::empty(shape, at::TensorOptions().dtype(type));
  if (tensor.nbytes() > 0) std::memcpy(tensor.data_ptr(), proto.data().data(), tensor.nbytes());
  return tensor;
}

absl::StatusOr<at::Tensor> TensorViewOfProto(const v1::Tensor& proto, const std::string& field) {
  at::ScalarType type;
  std::vector<int64_t> shape;
  if (auto status = CheckTensorProto(proto, field, &type, &shape); !status.ok()) return status;
  const char* data = proto.data().data();
  if (reinterpret_cast<uintptr_t>(data) % c10::elementSize(type) != 0) return TensorFromProto(proto, field);
  return at::from_blob(const_cast<char*>(data), shape, at::TensorOptions().dtype(type));
}

void TensorToProto(const at::Tensor& tensor, v1::Tensor* proto) {
  at::Tensor t = tensor.to(at::kCPU);
  if (t.scalar_type() != at::kFloat && t.scalar_type() != at::kByte) t = t.to(at::kFloat);
  t = t.contiguous();
  proto->clear_shape();
  for (int64_t d : t.sizes()) proto->add_shape(d);
  proto->set_dtype(t.scalar_type() == at::kFloat ? v1::DATA_TYPE_FLOAT32 : v1::DATA_TYPE_UINT8);
  proto->set_data(static_cast<const char*>(t.data_ptr()), t.nbytes());
}

}  // namespace vae
