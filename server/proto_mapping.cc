#include "server/proto_mapping.h"

#include "model/options.h"

namespace vae::server {
namespace {

v1::TrainProgress::Kind ToProto(Progress::Kind kind) {
  switch (kind) {
    case Progress::Kind::kStarted:
      return v1::TrainProgress::STARTED;
    case Progress::Kind::kStep:
      return v1::TrainProgress::STEP;
    case Progress::Kind::kEpochEnd:
      return v1::TrainProgress::EPOCH_END;
    case Progress::Kind::kDone:
      return v1::TrainProgress::DONE;
  }
  return v1::TrainProgress::KIND_UNSPECIFIED;
}

}  // namespace

TrainSpec TrainSpecFromProto(const v1::TrainRequest& r) {
  TrainSpec spec;  // its member initialisers are the defaults a zero asks for
  spec.dataset = r.dataset();
  if (r.epochs() != 0) spec.epochs = r.epochs();
  if (r.batch_size() != 0) spec.batch_size = r.batch_size();
  if (r.learning_rate() != 0.0) spec.learning_rate = r.learning_rate();
  if (r.seed() != 0) spec.seed = r.seed();
  spec.resume = r.resume();
  spec.preset = r.preset();
  spec.options_json = r.options_json();
  if (r.log_every_steps() != 0) spec.log_every_steps = r.log_every_steps();
  spec.max_train_images = r.max_train_images();
  spec.binarize = r.binarize();
  spec.model = r.model();
  spec.promote_label = r.promote_label();
  if (r.iw_samples() != 0) spec.iw_samples = r.iw_samples();
  if (r.adam_eps() != 0.0) spec.adam_eps = r.adam_eps();
  for (const v1::LrStage& stage : r.lr_schedule()) spec.lr_schedule.push_back({stage.epochs(), stage.learning_rate()});
  return spec;
}

ModelRef ModelRefFromProto(const v1::ModelSpec& spec) { return ModelRef{spec.name(), spec.version(), spec.label()}; }

void ToProto(const ModelVersion& version, v1::ModelVersion* out) {
  out->set_generation(version.version);
  out->set_model(version.model);
  out->set_version(version.version);
  out->set_epochs_trained(version.epochs_trained);
  out->set_global_step(version.global_step);
}

void ToProto(const Metrics& metrics, v1::Metrics* out) {
  out->set_loss(metrics.loss);
  out->set_recon(metrics.recon);
  out->set_kl(metrics.kl);
}

void ToProto(const TrainEvent& event, v1::TrainProgress* out) {
  const Progress& p = event.progress;
  out->set_kind(ToProto(p.kind));
  out->set_job_id(event.job_id);
  out->set_dataset(event.dataset);
  out->set_epoch(p.epoch);
  out->set_epochs(p.epochs);
  out->set_step_in_epoch(p.step_in_epoch);
  out->set_steps_per_epoch(p.steps_per_epoch);
  out->set_global_step(p.global_step);
  if (p.kind != Progress::Kind::kStarted) ToProto(p.train, out->mutable_train());
  out->set_has_test_metrics(p.has_test);
  if (p.has_test) ToProto(p.test, out->mutable_test());
  out->set_images_per_sec(p.images_per_sec);
  out->set_elapsed_sec(p.elapsed_sec);
  out->set_eta_sec(event.eta_sec);
  out->set_cancelled(p.cancelled);
  out->set_checkpoint_path(p.checkpoint_path);
  ToProto(event.version, out->mutable_version());
  out->set_label_moved(event.label_moved);
}

void ToProto(const Snapshot& snapshot, v1::ModelInfo* out) {
  const VaeOptions& o = snapshot.options;
  out->set_preset(o.preset);
  out->set_options_json(ToJson(o));
  for (int64_t d : o.input_shape()) out->add_input_shape(d);
  out->set_latent_dim(o.latent_dim);
  out->set_likelihood(ToString(o.likelihood));
  out->set_architecture(ToString(o.architecture));
  out->set_parameter_count(snapshot.model->parameter_count());
  ToProto(snapshot.version, out->mutable_version());
  out->set_has_train_metrics(snapshot.last_train.has_value());
  if (snapshot.last_train) ToProto(*snapshot.last_train, out->mutable_last_train());
  out->set_has_test_metrics(snapshot.last_test.has_value());
  if (snapshot.last_test) ToProto(*snapshot.last_test, out->mutable_last_test());
  out->set_device(snapshot.device.str());
  out->set_checkpoint_path(snapshot.checkpoint_path);
  out->set_train_json(snapshot.train_json);
}

void ToProto(const ServerCore& core, const Snapshot& snapshot, v1::ModelInfo* out) {
  ToProto(snapshot, out);
  const auto [labels, default_label] = core.repository().LabelsOf(snapshot.version.model, snapshot.version.version);
  for (const auto& label : labels) out->add_labels(label);
  out->set_default_label(default_label);
  if (const auto job = core.training().Running()) {
    out->set_training(true);
    out->set_training_job_id(job->id());
  }
  for (const auto& name : PresetNames()) out->add_presets(name);
  out->set_max_batch(static_cast<int32_t>(core.inference().max_batch()));
}

void ToProto(const ModelListing& listing, v1::ModelEntry* out) {
  out->set_name(listing.name);
  if (listing.options) {
    out->set_preset(listing.options->preset);
    out->set_options_json(ToJson(*listing.options));
    out->set_parameter_count(CountParameters(*listing.options));
  }
  out->set_default_label(listing.default_label);
  for (const auto& [label, version] : listing.labels) (*out->mutable_labels())[label] = version;
  for (const VersionListing& v : listing.versions) {
    v1::VersionInfo* info = out->add_versions();
    info->set_version(v.version);
    info->set_epochs_trained(v.epochs_trained);
    info->set_global_step(v.global_step);
    info->set_has_train_metrics(v.train.has_value());
    if (v.train) ToProto(*v.train, info->mutable_train());
    info->set_has_test_metrics(v.test.has_value());
    if (v.test) ToProto(*v.test, info->mutable_test());
    info->set_create_time_unix_ms(v.create_time_unix_ms);
    for (const auto& label : v.labels) info->add_labels(label);
    info->set_loaded(v.loaded);
    info->set_size_bytes(v.size_bytes);
  }
  out->set_training(listing.training);
}

}  // namespace vae::server
