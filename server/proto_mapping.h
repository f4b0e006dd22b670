// Every conversion between the vae.v1 protos and the server's core types, in one place: TrainRequest -> TrainSpec,
// ModelSpec -> ModelRef, TrainEvent -> TrainProgress, ModelVersion, Metrics, a Snapshot's part of ModelInfo, and the
// repository's listings -> ModelEntry. Tensors and images have
// their own codec (server/tensor_codec.h). Pure functions of their arguments; thread-safe.
#ifndef VAE_SERVER_PROTO_MAPPING_H_
#define VAE_SERVER_PROTO_MAPPING_H_

#include "model/trainer.h"
#include "server/model_repository.h"
#include "server/server_core.h"
#include "server/snapshot.h"
#include "server/training_job.h"
#include "vae/v1/vae_service.pb.h"

namespace vae::server {

// TrainRequest -> TrainSpec: proto zeros become the defaults of common/train_defaults.h (epochs 1, batch_size 128,
// learning_rate 1e-3, seed 1, log_every_steps 100, iw_samples 1, adam_eps 1e-8); everything else is copied for the
// core to validate.
TrainSpec TrainSpecFromProto(const v1::TrainRequest& request);

// ModelSpec -> ModelRef, copied as is (the repository validates it).
ModelRef ModelRefFromProto(const v1::ModelSpec& spec);

// Sets `generation` to the version number too (what clients written before model versions read).
void ToProto(const ModelVersion& version, v1::ModelVersion* out);
void ToProto(const Metrics& metrics, v1::Metrics* out);
// A STARTED event carries no train metrics; test metrics only when progress.has_test.
void ToProto(const TrainEvent& event, v1::TrainProgress* out);
// What the snapshot knows of itself: options, parameter count, version, metrics, device, checkpoint and train_json.
// The server-wide fields (training, training_job_id, presets, max_batch, labels, default_label) are the caller's.
void ToProto(const Snapshot& snapshot, v1::ModelInfo* out);
// The whole ModelInfo of `snapshot` served by `core`: the above plus the server-wide fields (GetModelInfo, and the
// HTTP API's GET /v1/models/{name}).
void ToProto(const ServerCore& core, const Snapshot& snapshot, v1::ModelInfo* out);

void ToProto(const ModelListing& listing, v1::ModelEntry* out);

}  // namespace vae::server

#endif  // VAE_SERVER_PROTO_MAPPING_H_
