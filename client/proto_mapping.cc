#include "client/proto_mapping.h"

#include <c10/util/Exception.h>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "proto/tensor_proto.h"

namespace vae::client {

ModelVersion FromProto(const v1::ModelVersion& v) {
  return ModelVersion{v.generation(), v.epochs_trained(), v.global_step(), v.model(), v.version()};
}

Metrics FromProto(const v1::Metrics& m) { return Metrics{m.loss(), m.recon(), m.kl()}; }

TrainProgress FromProto(const v1::TrainProgress& p) {
  TrainProgress out;
  switch (p.kind()) {
    case v1::TrainProgress::STARTED:
      out.kind = TrainProgress::Kind::kStarted;
      break;
    case v1::TrainProgress::STEP:
      out.kind = TrainProgress::Kind::kStep;
      break;
    case v1::TrainProgress::EPOCH_END:
      out.kind = TrainProgress::Kind::kEpochEnd;
      break;
    case v1::TrainProgress::DONE:
      out.kind = TrainProgress::Kind::kDone;
      break;
    default:
      out.kind = TrainProgress::Kind::kUnspecified;
  }
  out.job_id = p.job_id();
  out.dataset = p.dataset();
  out.epoch = p.epoch();
  out.epochs = p.epochs();
  out.step_in_epoch = p.step_in_epoch();
  out.steps_per_epoch = p.steps_per_epoch();
  out.global_step = p.global_step();
  out.train = FromProto(p.train());
  if (p.has_test_metrics()) out.test = FromProto(p.test());
  out.images_per_sec = p.images_per_sec();
  out.elapsed_sec = p.elapsed_sec();
  out.eta_sec = p.eta_sec();
  out.cancelled = p.cancelled();
  out.checkpoint_path = p.checkpoint_path();
  out.version = FromProto(p.version());
  out.label_moved = p.label_moved();
  return out;
}

ModelInfo FromProto(const v1::ModelInfo& r) {
  ModelInfo info;
  info.preset = r.preset();
  info.options_json = r.options_json();
  info.input_shape.assign(r.input_shape().begin(), r.input_shape().end());
  info.latent_dim = r.latent_dim();
  info.likelihood = r.likelihood();
  info.architecture = r.architecture();
  info.parameter_count = r.parameter_count();
  info.version = FromProto(r.version());
  if (r.has_train_metrics()) info.last_train = FromProto(r.last_train());
  if (r.has_test_metrics()) info.last_test = FromProto(r.last_test());
  info.device = r.device();
  info.checkpoint_path = r.checkpoint_path();
  info.training = r.training();
  info.training_job_id = r.training_job_id();
  info.presets.assign(r.presets().begin(), r.presets().end());
  info.train_json = r.train_json();
  info.max_batch = r.max_batch();
  info.labels.assign(r.labels().begin(), r.labels().end());
  info.default_label = r.default_label();
  return info;
}

VersionInfo FromProto(const v1::VersionInfo& v) {
  VersionInfo out;
  out.version = v.version();
  out.epochs_trained = v.epochs_trained();
  out.global_step = v.global_step();
  if (v.has_train_metrics()) out.train = FromProto(v.train());
  if (v.has_test_metrics()) out.test = FromProto(v.test());
  out.created = absl::FromUnixMillis(v.create_time_unix_ms());
  out.labels.assign(v.labels().begin(), v.labels().end());
  out.loaded = v.loaded();
  out.size_bytes = v.size_bytes();
  return out;
}

ModelEntry FromProto(const v1::ModelEntry& m) {
  ModelEntry out;
  out.name = m.name();
  out.preset = m.preset();
  out.options_json = m.options_json();
  out.parameter_count = m.parameter_count();
  out.default_label = m.default_label();
  out.labels.insert(m.labels().begin(), m.labels().end());
  for (const v1::VersionInfo& v : m.versions()) out.versions.push_back(FromProto(v));
  out.training = m.training();
  return out;
}

ModelList FromProto(const v1::ListModelsResponse& list) {
  ModelList out;
  for (const v1::ModelEntry& m : list.models()) out.models.push_back(FromProto(m));
  out.default_model = list.default_model();
  return out;
}

void ToProto(const TrainOptions& options, v1::TrainRequest* out) {
  out->set_dataset(options.dataset);
  out->set_epochs(options.epochs);
  out->set_batch_size(options.batch_size);
  out->set_learning_rate(options.learning_rate);
  out->set_seed(options.seed);
  out->set_resume(options.resume);
  out->set_preset(options.preset);
  out->set_options_json(options.options_json);
  out->set_log_every_steps(options.log_every_steps);
  out->set_max_train_images(options.max_train_images);
  out->set_binarize(options.binarize);
  out->set_model(options.model);
  out->set_promote_label(options.promote_label);
  out->set_iw_samples(options.iw_samples);
  out->set_adam_eps(options.adam_eps);
  for (const LrStage& stage : options.lr_schedule) {
    v1::LrStage* added = out->add_lr_schedule();
    added->set_epochs(stage.epochs);
    added->set_learning_rate(stage.learning_rate);
  }
}

absl::Status ToProto(const at::Tensor& tensor, const char* field, v1::Tensor* out) {
  if (!tensor.defined()) return absl::InvalidArgumentError(absl::StrCat(field, ": the tensor is undefined"));
  try {
    TensorToProto(tensor, out);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": cannot convert the tensor: ", e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

absl::Status ToProto(const ImageInput& images, v1::ImageBatch* out) {
  const bool has_tensor = images.tensor.defined();
  if (has_tensor == !images.encoded.empty()) {
    return absl::InvalidArgumentError("images: set exactly one of tensor and encoded");
  }
  if (has_tensor) return ToProto(images.tensor, "images.tensor", out->mutable_tensor());
  for (const std::string& file : images.encoded) out->add_encoded(file);
  out->set_resize(images.resize);
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> FromProto(const v1::Tensor& proto, const char* field) {
  auto tensor = TensorFromProto(proto, field);
  if (!tensor.ok()) return absl::InternalError(absl::StrCat("response ", tensor.status().message()));
  return tensor;
}

}  // namespace vae::client
